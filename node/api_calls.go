package node

import "net/http"

// serveCallStart answers POST /v1/calls {"to","audio","path","profile"}: CallInfo.
func (n *Node) serveCallStart(w http.ResponseWriter, r *http.Request) {
	var req callRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := checkPolicy(req.Path, req.Profile); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	opts, err := req.Audio.Open()
	if err != nil {
		writeErr(w, err)
		return
	}
	opts.Path, opts.Profile = req.Path, req.Profile
	// The call outlives the request: it ends on hangup, not when the
	// client disconnects.
	c, err := n.Call(n.ctx, req.To, opts)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userCall(c.Info()))
}

// serveCalls answers GET /v1/calls: []CallInfo.
func (n *Node) serveCalls(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.Calls())
}

// serveCall answers GET /v1/calls/{id}: CallInfo with statistics.
func (n *Node) serveCall(w http.ResponseWriter, r *http.Request) {
	c, err := n.FindCall(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userCall(c.Info()))
}

// serveCallVerb answers POST /v1/call/{answer,reject,hangup} {"id","audio"}: CallInfo.
func (n *Node) serveCallVerb(w http.ResponseWriter, r *http.Request) {
	var req callRequest
	if !readJSON(w, r, &req) {
		return
	}
	c, err := n.FindCall(req.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	switch r.PathValue("verb") {
	case "answer":
		opts, err := req.Audio.Open()
		if err == nil {
			err = c.Answer(n.ctx, opts)
		}
		if err != nil {
			writeErr(w, err)
			return
		}
	case "reject":
		if err := c.Reject(); err != nil {
			writeErr(w, err)
			return
		}
	case "hangup":
		c.Hangup()
	default:
		writeJSON(w, http.StatusNotFound, apiError{Error: "unknown call verb " + r.PathValue("verb")})
		return
	}
	writeJSON(w, http.StatusOK, userCall(c.Info()))
}

type callRequest struct {
	ID      string    `json:"id"`
	To      string    `json:"to"`
	Audio   AudioSpec `json:"audio"`
	Path    string    `json:"path,omitempty"`
	Profile string    `json:"profile,omitempty"`
}
