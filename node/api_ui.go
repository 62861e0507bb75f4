package node

import (
	"context"
	"net/http"
)

// serveUILogin answers POST /v1/ui/login with a one-time login URL of the
// web app: what `parley open` prints.
func (n *Node) serveUILogin(w http.ResponseWriter, r *http.Request) {
	u := n.ui.Load()
	if u == nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "this daemon serves no web app (it was started with --ui off)"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": u.LoginURL(), "addr": u.addr})
}

// UILogin asks the daemon for a one-time login URL of its web app.
func (c *Client) UILogin(ctx context.Context) (string, error) {
	var out struct {
		URL string `json:"url"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/ui/login", struct{}{}, &out)
	return out.URL, err
}
