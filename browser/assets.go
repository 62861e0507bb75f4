package browser

import "embed"

// Assets is the web app: web/index.html and the scripts and styles it loads.
//
//go:embed web
var Assets embed.FS
