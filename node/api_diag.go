package node

import "net/http"

// serveNetcheck answers GET /v1/netcheck: netcheck.Report.
func (n *Node) serveNetcheck(w http.ResponseWriter, r *http.Request) {
	rep, err := n.Netcheck(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// servePing answers GET /v1/ping/{handle}: []PingResult.
func (n *Node) servePing(w http.ResponseWriter, r *http.Request) {
	res, err := n.Ping(r.Context(), r.PathValue("handle"))
	if err != nil && res == nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res) // a probe that failed says why in its result
}
