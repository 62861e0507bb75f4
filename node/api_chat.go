package node

import (
	"net/http"
	"strconv"
)

// serveChatSend answers POST /v1/chat/send {"to","text"}: SendResult.
func (n *Node) serveChatSend(w http.ResponseWriter, r *http.Request) {
	var req struct {
		To   string `json:"to"`
		Text string `json:"text"`
	}
	if !readJSONLimit(w, r, &req, maxSendRequest) {
		return
	}
	res, err := n.Send(r.Context(), req.To, req.Text)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userResult(res))
}

// serveChatHistory answers GET /v1/chat/history/{handle}?limit=N: []Message.
func (n *Node) serveChatHistory(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	h, err := n.History(r.Context(), r.PathValue("handle"), limit)
	if err != nil {
		writeErr(w, err)
		return
	}
	if h == nil {
		h = []Message{}
	}
	writeJSON(w, http.StatusOK, h)
}

// serveGroupCreate answers POST /v1/groups {"name","members"}: Group.
func (n *Node) serveGroupCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name    string   `json:"name"`
		Members []string `json:"members"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	g, err := n.CreateGroup(r.Context(), req.Name, req.Members)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, g)
}

// serveGroups answers GET /v1/groups: []Group.
func (n *Node) serveGroups(w http.ResponseWriter, r *http.Request) {
	gs, err := n.Groups(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	if gs == nil {
		gs = []Group{}
	}
	writeJSON(w, http.StatusOK, gs)
}
