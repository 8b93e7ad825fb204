package webui

import (
	"embed"
	"mime"
)

// distFS holds the built browser UI. "all:" keeps files whose names start
// with "_" or ".", which bundlers emit.
//
//go:embed all:dist
var distFS embed.FS

func init() {
	// Go's table lacks the web manifest type; browsers want it exact.
	// (mime.AddExtensionType is safe for concurrent use.)
	_ = mime.AddExtensionType(".webmanifest", "application/manifest+json")
}
