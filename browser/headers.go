package browser

import "net/http"

// SecureHeaders sets the headers every page and asset parley serves
// carries: csp as the Content-Security-Policy, no sniffing, no framing,
// no referrer, no caching, its own origin only, and the microphone for
// the page itself alone.
func SecureHeaders(h http.Header, csp string) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "microphone=(self), camera=()")
}
