package webui

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Device is one device of the account in the device list.
type Device struct {
	Device  string    `json:"device"` // hex device key
	Name    string    `json:"name"`
	Added   time.Time `json:"added"`
	Self    bool      `json:"self"`   // the device serving this API
	Online  bool      `json:"online"` // connected to it right now
	Revoked bool      `json:"revoked"`
}

// DevicesBackend is the multi-device side of the node: the device list,
// link codes, linking this node to another device's account, revocation.
// A backend without it serves none of these routes.
type DevicesBackend interface {
	Devices(ctx context.Context) ([]Device, error)
	// CreateLinkCode returns a one-time code (valid ten minutes) that
	// links a fresh node to this account.
	CreateLinkCode(ctx context.Context) (Invite, error)
	// Link makes this fresh node a device of the account of code.
	Link(ctx context.Context, code string) error
	RevokeDevice(ctx context.Context, device string) error
}

func (s *Server) registerDevices(api *http.ServeMux) {
	d, ok := s.cfg.Backend.(DevicesBackend)
	if !ok {
		return
	}
	api.HandleFunc("GET /api/v1/devices", func(w http.ResponseWriter, r *http.Request) {
		ds, err := d.Devices(r.Context())
		reply(w, ds, err)
	})
	api.HandleFunc("POST /api/v1/devices/link-code", func(w http.ResponseWriter, r *http.Request) {
		code, err := d.CreateLinkCode(r.Context())
		replyStatus(w, http.StatusCreated, code, err)
	})
	api.HandleFunc("POST /api/v1/link", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Code string `json:"code"`
		}
		if !decode(w, r, &req) {
			return
		}
		req.Code = strings.TrimSpace(req.Code)
		if req.Code == "" || len(req.Code) > maxInviteLinkLen {
			writeError(w, http.StatusBadRequest, "code is required (at most 4096 bytes)")
			return
		}
		replyStatus(w, http.StatusNoContent, nil, d.Link(r.Context(), req.Code))
	})
	api.HandleFunc("DELETE /api/v1/devices/{device}", func(w http.ResponseWriter, r *http.Request) {
		replyStatus(w, http.StatusNoContent, nil, d.RevokeDevice(r.Context(), r.PathValue("device")))
	})
}

// BackupBackend writes and restores encrypted account backups.
type BackupBackend interface {
	// Backup returns the account's backup, encrypted under its recovery key.
	Backup(ctx context.Context) ([]byte, error)
	// Restore brings an account back on this fresh node.
	Restore(ctx context.Context, words string, backup []byte) error
}

// maxBackupUpload bounds a restore request (the backup travels base64).
const maxBackupUpload = 24 << 20

func (s *Server) registerBackup(api *http.ServeMux) {
	b, ok := s.cfg.Backend.(BackupBackend)
	if !ok {
		return
	}
	api.HandleFunc("GET /api/v1/backup", func(w http.ResponseWriter, r *http.Request) {
		data, err := b.Backup(r.Context())
		if err != nil {
			replyStatus(w, 0, nil, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="glitr-backup.bin"`)
		_, _ = w.Write(data)
	})
	api.HandleFunc("POST /api/v1/restore", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Words  string `json:"words"`
			Backup []byte `json:"backup"` // base64 in JSON
		}
		if !decodeLimit(w, r, &req, maxBackupUpload) {
			return
		}
		replyStatus(w, http.StatusNoContent, nil, b.Restore(r.Context(), req.Words, req.Backup))
	})
}
