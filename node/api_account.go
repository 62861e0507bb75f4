package node

import (
	"bytes"
	"context"
	"net/http"
	"time"

	"github.com/parley-net/parley/discovery"
)

// serveStatus answers GET /v1/status: Status.
func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.Status())
}

// serveWhois answers GET /v1/whois/{handle}: Whois.
func (n *Node) serveWhois(w http.ResponseWriter, r *http.Request) {
	who, err := n.Resolve(r.Context(), r.PathValue("handle"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, who)
}

// serveLink answers POST /v1/link: {"code"}, a one-time pairing code.
func (n *Node) serveLink(w http.ResponseWriter, r *http.Request) {
	code, err := n.LinkCode()
	if err != nil {
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"code": code})
}

// serveDevices answers GET /v1/devices: []discovery.Device.
func (n *Node) serveDevices(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.publishedDevices(r.Context()))
}

// serveUnlink answers POST /v1/devices/unlink {"peer"}: []discovery.Device.
func (n *Node) serveUnlink(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Peer string `json:"peer"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if _, err := n.Unlink(r.Context(), req.Peer); err != nil {
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, n.Devices())
}

// Status describes a running node.
type Status struct {
	Handle      string   `json:"handle"`
	PeerID      string   `json:"peer_id"`
	Fingerprint string   `json:"fingerprint"`
	Addrs       []string `json:"addrs"`
	Peers       int      `json:"peers"`
	// Online is whether the node reaches at least one supernode; State
	// says the same as "online" or "offline".
	Online bool   `json:"online"`
	State  string `json:"state"`
	// Since is when the node entered State.
	Since time.Time `json:"since"`
	// OfflineReason, when offline, names the addresses tried, what each
	// answered and how long the last attempt took.
	OfflineReason string `json:"offline_reason,omitempty"`
	// Supernodes is how many supernodes the node is connected to.
	Supernodes int `json:"supernodes"`
}

// Status reports who and where the node is, and whether it is online.
func (n *Node) Status() Status {
	net := n.net.get()
	st := Status{Handle: n.id.Handle(), PeerID: n.ID().String(), Fingerprint: n.id.Fingerprint(), Peers: len(n.host.Network().Peers()),
		Online: net.state == stateOnline, State: net.state.String(), Since: net.since, OfflineReason: net.reason,
		Supernodes: n.supernodesConnected()}
	for _, a := range n.host.Addrs() {
		st.Addrs = append(st.Addrs, a.String()+"/p2p/"+n.ID().String())
	}
	return st
}

// publishedDevices is the account's device list as the DHT has it, when
// that is newer than this device's copy: a device unlinked from another one
// learns it here, and does not list itself any more. The local copy answers
// when the DHT does not, within a few seconds.
func (n *Node) publishedDevices(ctx context.Context) []discovery.Device {
	mine, err := discovery.ParseHandleRecord(n.id.Record())
	if err != nil {
		return n.Devices()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rec, _, err := discovery.Resolve(ctx, n.dht, mine.Handle)
	if err != nil || !bytes.Equal(rec.Account, mine.Account) || rec.Seq <= mine.Seq {
		return mine.Devices
	}
	return rec.Devices
}
