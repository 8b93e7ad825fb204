package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Errors a Backend wraps so the API can answer with the right status.
var (
	ErrNotFound    = errors.New("not found")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("not available on this node")
	// ErrForbidden: allowed for someone, not for this account (not an
	// admin, not the author of the message).
	ErrForbidden = errors.New("forbidden")
	// ErrLocked: the account is locked; unlock it with the passphrase.
	ErrLocked = errors.New("account locked")
	// ErrConflict: the request contradicts the state (account already
	// set up, recovery words already shown).
	ErrConflict = errors.New("conflict")
	// ErrWrongPassphrase: the passphrase does not open the keyring.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrTooLarge: a file or body over a limit (413).
	ErrTooLarge = errors.New("too large")
)

// Error codes: every error body is {"error": text, "code": code}. The text
// is English and meant for logs and the CLI; the browser translates the
// code. Codes are part of the API: never rename one, only add.
const (
	CodeBadRequest         = "bad_request"
	CodeBadJSON            = "bad_json"
	CodeTooLarge           = "too_large"
	CodeBadLimit           = "bad_limit"
	CodeUnauthorized       = "unauthorized"
	CodeForbidden          = "forbidden"
	CodeForbiddenHost      = "forbidden_host"
	CodeForbiddenOrigin    = "forbidden_origin"
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeConflict           = "conflict"
	CodeLocked             = "locked"
	CodeWrongPassphrase    = "wrong_passphrase"
	CodeUnavailable        = "unavailable"
	CodeCancelled          = "cancelled"
	CodeInternal           = "internal"
	CodeNoConversation     = "no_conversation"
	CodeNoMessage          = "no_message"
	CodeNotContact         = "not_contact"
	CodeNotAdmin           = "not_admin"
	CodeNotMember          = "not_member"
	CodeNotYourMessage     = "not_your_message"
	CodeMessageEmpty       = "message_empty"
	CodeMessageTooLong     = "message_too_long"
	CodeMessageDeleted     = "message_deleted"
	CodeBadEmoji           = "bad_emoji"
	CodeBadCard            = "bad_card"
	CodeInviteInvalid      = "invite_invalid"
	CodeInviteExpired      = "invite_expired"
	CodeInviteUsed         = "invite_used"
	CodeLinkInvalid        = "link_invalid"
	CodeLinkExpired        = "link_expired"
	CodeLinkUsed           = "link_used"
	CodeNotFresh           = "not_fresh"
	CodeContactKeyExpired  = "contact_key_expired"
	CodeContactBlocked     = "contact_blocked"
	CodeAccountExists      = "account_exists"
	CodeRecoveryShown      = "recovery_shown"
	CodeNotSynced          = "not_synced"
	CodeWrongRecoveryWords = "wrong_recovery_words"
	CodeBackupInvalid      = "backup_invalid"
	CodeDeviceRevoked      = "device_revoked"
	CodeFileTooLarge       = "file_too_large"
	CodeStorageFull        = "storage_full"
	CodeNoAttachment       = "no_attachment"
	CodeNotDownloaded      = "not_downloaded"
	CodeAttachmentGone     = "attachment_unavailable"
)

// codedError gives an error the code the API answers with.
type codedError struct {
	code string
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// WithCode marks err with an API error code (one of the Code constants).
// The status still comes from the sentinel err wraps.
func WithCode(code string, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// ErrorCode is the code err was marked with ("" when none).
func ErrorCode(err error) string {
	var c *codedError
	if errors.As(err, &c) {
		return c.code
	}
	return ""
}

// statusCodes names the code of an error that was given none.
var statusCodes = map[int]string{
	http.StatusBadRequest:            CodeBadRequest,
	http.StatusUnauthorized:          CodeUnauthorized,
	http.StatusForbidden:             CodeForbidden,
	http.StatusNotFound:              CodeNotFound,
	http.StatusMethodNotAllowed:      CodeMethodNotAllowed,
	http.StatusConflict:              CodeConflict,
	http.StatusRequestEntityTooLarge: CodeTooLarge,
	http.StatusLocked:                CodeLocked,
	http.StatusNotImplemented:        CodeUnavailable,
	http.StatusServiceUnavailable:    CodeCancelled,
	http.StatusInternalServerError:   CodeInternal,
}

type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeError answers with the status's default code.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeCodedError(w, status, "", msg)
}

func writeCodedError(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = statusCodes[status]
		if code == "" {
			code = CodeBadRequest
			if status >= 500 {
				code = CodeInternal
			}
		}
	}
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeLimit(w, r, v, maxRequestBody)
}

// decodeLimit reads one JSON value of at most limit bytes into v, refusing
// unknown fields and trailing data. A larger body is answered 413 with the
// limit named, not as the broken JSON its cut-off prefix would be.
func decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Trailing data after the value: read what is left, within the
		// limit, so an oversized body is still named as such.
		var extra json.RawMessage
		if err = dec.Decode(&extra); err == io.EOF {
			return true
		} else if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeCodedError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("request body is larger than %s", byteSize(tooBig.Limit)))
		return false
	}
	writeCodedError(w, http.StatusBadRequest, CodeBadJSON, "invalid JSON body: "+err.Error())
	return false
}

// byteSize names a limit the way people read it (64 KiB, 24 MiB).
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func reply(w http.ResponseWriter, v any, err error) { replyStatus(w, http.StatusOK, v, err) }

func replyStatus(w http.ResponseWriter, code int, v any, err error) {
	if err == nil {
		if code == http.StatusNoContent {
			w.WriteHeader(code)
			return
		}
		writeJSON(w, code, v)
		return
	}
	status, msg := http.StatusInternalServerError, err.Error()
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, ErrUnavailable):
		status = http.StatusNotImplemented
	case errors.Is(err, ErrWrongPassphrase):
		status = http.StatusForbidden
		if ErrorCode(err) == "" {
			err = WithCode(CodeWrongPassphrase, err)
		}
	case errors.Is(err, ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, ErrLocked):
		status = http.StatusLocked
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, context.Canceled):
		status, msg = http.StatusServiceUnavailable, "request cancelled"
	}
	// Internal errors are logged by the backend; the message names the
	// operation, never secrets.
	writeCodedError(w, status, ErrorCode(err), msg)
}
