package webui

import "embed"

// distFS holds the built browser UI. "all:" keeps files whose names start
// with "_" or ".", which bundlers emit.
//
//go:embed all:dist
var distFS embed.FS
