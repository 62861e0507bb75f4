package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-net/parley/discovery"
	"github.com/parley-net/parley/node"
)

// TestReadmeHandleNotStolen is issue 8's handle hijack as it was found by
// hand against a clean clone: the README's set-up, several supernodes and a
// daemon given one of them with --bootstrap. The daemon's first claim must
// be witnessed by every supernode close to its handle (not by its bootstrap
// supernode alone); otherwise an ordinary node that claims the handle later,
// at the other supernodes, owns it for every device that bootstraps from
// them, and the real owner's daemon refuses to start once its host cache
// names them ("handle already claimed by another account").
func TestReadmeHandleNotStolen(t *testing.T) {
	root := t.TempDir()
	snArgs := func(name string, boot ...string) []string {
		a := []string{"--home", root + "/" + name, "supernode", "--stun", "", "--listen", "/ip4/127.0.0.1/tcp/0"}
		for _, b := range boot {
			a = append(a, "--bootstrap", b)
		}
		return a
	}
	sn1 := startProc(t, snArgs("sn1")...)
	boot1 := strings.TrimSpace(sn1.waitLine(t, "/p2p/", 30*time.Second))
	sn2 := startProc(t, snArgs("sn2", boot1)...)
	boot2 := strings.TrimSpace(sn2.waitLine(t, "/p2p/", 30*time.Second))
	sn3 := startProc(t, snArgs("sn3", boot1)...)
	boot3 := strings.TrimSpace(sn3.waitLine(t, "/p2p/", 30*time.Second))

	mustRun(t, "--home", root+"/dave", "id", "init", "--handle", "dave")
	daveArgs := []string{"--home", root + "/dave", "daemon", "--bootstrap", boot1, "--listen", "/ip4/127.0.0.1/tcp/0"}
	dave := startProc(t, daveArgs...)
	dave.waitLine(t, "ready", 30*time.Second)
	fp := fingerprintOf(mustRun(t, "--home", root+"/dave", "id", "show"))

	// mallory, an ordinary node with a fresh account, claims dave at every
	// supernode afterwards and publishes her record.
	infos, err := discovery.ParseAddrs([]string{boot1, boot2, boot3})
	if err != nil {
		t.Fatal(err)
	}
	claimAsMallory(t, "dave", infos)

	// A new device bootstrapped from another supernode finds the real dave.
	mustRun(t, "--home", root+"/erin", "id", "init", "--handle", "erin")
	erin := startProc(t, "--home", root+"/erin", "daemon", "--bootstrap", boot2, "--listen", "/ip4/127.0.0.1/tcp/0")
	erin.waitLine(t, "ready", 30*time.Second)
	if got := fingerprintOf(mustRun(t, "--home", root+"/erin", "whois", "dave")); got != fp {
		t.Fatalf("erin's whois dave names fingerprint %q, dave's is %q", got, fp)
	}

	// dave's daemon restarts, its host cache now naming every supernode.
	dave.cmd.Process.Signal(os.Interrupt)
	<-dave.done
	dave = startProc(t, daveArgs...)
	dave.waitLine(t, "ready", 30*time.Second)
}

func fingerprintOf(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fingerprint") {
			return strings.TrimSpace(strings.TrimPrefix(l, "fingerprint"))
		}
	}
	return ""
}

// claimAsMallory claims handle under a fresh account the way a device does:
// a witness from each supernode, then a signed record published in the DHT.
func claimAsMallory(t *testing.T, handle string, sns []peer.AddrInfo) {
	t.Helper()
	id, err := node.InitIdentity(t.TempDir(), handle, "mallory", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(id.DeviceKey), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := discovery.NewDHT(ctx, h, discovery.DHTConfig{Bootstrap: sns})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := discovery.Bootstrap(ctx, h, sns, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := discovery.WaitRoutable(ctx, d); err != nil {
		t.Fatal(err)
	}
	var ws []discovery.Witness
	for _, sn := range sns {
		w, err := discovery.RequestWitness(ctx, h, sn.ID, handle, id.AccountPub)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, *w)
	}
	if _, err := id.AddWitnesses(ws, nil); err != nil {
		t.Fatal(err)
	}
	rec, err := id.Resign(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := discovery.Publish(ctx, d, rec); err != nil {
		t.Fatal(err)
	}
}
