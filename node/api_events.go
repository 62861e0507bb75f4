package node

import (
	"encoding/json"
	"net/http"
)

// serveEvents answers GET /v1/events: newline-delimited JSON Events, until the client closes.
func (n *Node) serveEvents(w http.ResponseWriter, r *http.Request) {
	ch, stop := n.Subscribe()
	defer stop()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			if e.Call != nil {
				ci := userCall(*e.Call)
				e.Call = &ci
			}
			if enc.Encode(e) != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}
