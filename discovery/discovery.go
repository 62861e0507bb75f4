// Package discovery finds parley devices and supernodes: a Kademlia DHT with
// parley's own protocol prefix (/parley, never the IPFS DHT), signed handle
// records that bind a handle to an account key and its devices, and
// bootstrapping from supernode multiaddrs.
//
// Handle records are JSON (see HandleRecord), at most MaxRecordSize bytes,
// signed by the account's Ed25519 key and valid for at most MaxRecordTTL.
// They carry supernodes' signed witnesses of when the claim was first seen
// (ClaimProtocol, at most MaxWitnesses); rival claims rank by the time a
// quorum of trusted supernodes attests, never by a time the claimant wrote.
// A lookup (LookupHandle) walks to the 20 DHT servers closest to the
// handle, asking each for the record as it goes, and compares their answers
// rather than taking the first.
// discovery knows nothing of WebRTC or chat.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	ds "github.com/ipfs/go-datastore"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// ProtocolPrefix keeps parley's DHT apart from every other Kademlia network.
const ProtocolPrefix = "/parley"

// RecordMaxAge is how long a DHT server keeps a record nobody republished.
const RecordMaxAge = 36 * time.Hour

// ErrNoBootstrap is returned when no bootstrap peer could be reached.
var ErrNoBootstrap = errors.New("could not reach any bootstrap peer")

// DHTConfig configures NewDHT.
type DHTConfig struct {
	// Server runs the DHT in server mode (supernodes); false is client mode.
	Server bool
	// Bootstrap peers the routing table starts from; nil means none.
	Bootstrap []peer.AddrInfo
	// Now is the clock for record validity; nil means time.Now.
	Now func() time.Time
	// Trusted are the supernodes whose claim witnesses count (see
	// HandleValidator); nil means the Bootstrap peers, and on a server
	// itself too.
	Trusted []peer.ID
	// Quorum is HandleValidator.Quorum; 0 means DefaultQuorum.
	Quorum int
	// Datastore keeps the records this DHT server stores for others (and
	// its provider records); nil means kad-dht's in-memory map, lost at
	// every restart. The caller closes it after the DHT.
	Datastore ds.Batching
	// Options are further kad-dht options, applied last (a lab turns off
	// the routing-table refresh of thousands of simulated nodes); nil means
	// none.
	Options []dht.Option
}

// NewDHT starts a parley DHT on h.
func NewDHT(ctx context.Context, h host.Host, cfg DHTConfig) (*dht.IpfsDHT, error) {
	mode := dht.ModeClient
	if cfg.Server {
		mode = dht.ModeServer
	}
	trusted := cfg.Trusted
	if trusted == nil {
		for _, pi := range cfg.Bootstrap {
			trusted = append(trusted, pi.ID)
		}
		if cfg.Server {
			trusted = append(trusted, h.ID())
		}
	}
	validator := record.NamespacedValidator{
		HandleNamespace: HandleValidator{Now: cfg.Now, PreferExisting: cfg.Server, Trusted: trusted, Quorum: cfg.Quorum},
	}
	opts := []dht.Option{
		dht.Mode(mode),
		dht.ProtocolPrefix(ProtocolPrefix),
		dht.Validator(validator),
		dht.MaxRecordAge(RecordMaxAge),
		// parley networks are small and often live on one LAN or loopback:
		// keep every address, not only public ones.
		dht.AddressFilter(nil),
	}
	if len(cfg.Bootstrap) > 0 {
		opts = append(opts, dht.BootstrapPeers(cfg.Bootstrap...))
	}
	if cfg.Datastore != nil {
		opts = append(opts, dht.Datastore(cfg.Datastore))
	}
	return dht.New(ctx, h, append(opts, cfg.Options...)...)
}

// ParseAddrs turns multiaddr strings with /p2p/<id> into peer infos.
func ParseAddrs(addrs []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
			m, err := ma.NewMultiaddr(part)
			if err != nil {
				return nil, fmt.Errorf("bootstrap address %q: %w", part, err)
			}
			mas = append(mas, m)
		}
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("bootstrap addresses must end in /p2p/<peer id>: %w", err)
	}
	return infos, nil
}

// Bootstrap connects to every peer in parallel and returns how many answered.
// Once one has answered it waits at most bootstrapGrace for the others, so
// a dead supernode in the list (whose QUIC dial only fails at the handshake
// timeout) does not hold the node up. It fails with ErrNoBootstrap, naming
// each failure, when none answered within timeout.
func Bootstrap(ctx context.Context, h host.Host, peers []peer.AddrInfo, timeout time.Duration) (int, error) {
	if len(peers) == 0 {
		return 0, fmt.Errorf("%w: no bootstrap addresses given", ErrNoBootstrap)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		pi  peer.AddrInfo
		err error
	}
	results := make(chan result, len(peers))
	sw, _ := h.Network().(*swarm.Swarm)
	for _, pi := range peers {
		if sw != nil {
			// A retry is deliberate: libp2p's dial backoff after the last
			// failure must not turn it into a no-op.
			sw.Backoff().Clear(pi.ID)
		}
		go func(pi peer.AddrInfo) {
			err := h.Connect(ctx, pi)
			if errors.Is(err, swarm.ErrDialBackoff) && sw != nil {
				// Another dial (the DHT's own bootstrap) failed just now:
				// say why this one fails, not that it was skipped.
				sw.Backoff().Clear(pi.ID)
				err = h.Connect(ctx, pi)
			}
			results <- result{pi, err}
		}(pi)
	}
	var errs []string
	ok := 0
	var grace <-chan time.Time
	for i := 0; i < len(peers); i++ {
		select {
		case r := <-results:
			if r.err != nil {
				errs = append(errs, fmt.Sprintf("%s: %s", PeerAddrString(r.pi), shortErr(r.err)))
				continue
			}
			if ok++; ok == 1 {
				grace = time.After(bootstrapGrace)
			}
		case <-grace:
			return ok, nil
		}
	}
	if ok == 0 {
		return 0, fmt.Errorf("%w after %s (%s)", ErrNoBootstrap, roundElapsed(time.Since(start)), strings.Join(errs, "; "))
	}
	return ok, nil
}

const bootstrapGrace = time.Second

// roundElapsed shows a duration to the millisecond, or to the microsecond
// below one (a refused connection on loopback).
func roundElapsed(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// shortErr is one line of a dial error for a person: the reason of the
// last address that failed (libp2p lists one per line) rather than the
// summary, and never Go's "<peer.ID 12*abc>" form.
func shortErr(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	s := strings.TrimSpace(lines[0])
	if len(lines) > 1 {
		s = strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "* ")
	}
	s = peerIDForm.ReplaceAllString(s, "$1")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

var peerIDForm = regexp.MustCompile(`<peer\.ID ([^>]*)>`)

// PeerAddrString names a peer for a person: its first address with
// /p2p/<id>, or the bare ID when no address is known.
func PeerAddrString(pi peer.AddrInfo) string {
	if len(pi.Addrs) == 0 {
		return pi.ID.String()
	}
	return pi.Addrs[0].String() + "/p2p/" + pi.ID.String()
}

// WaitRoutable waits until the routing table holds at least one DHT server.
func WaitRoutable(ctx context.Context, d *dht.IpfsDHT) error {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for d.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for a DHT server in the routing table: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Publish stores a signed handle record in the DHT.
func Publish(ctx context.Context, d *dht.IpfsDHT, rec []byte) error {
	r, err := ParseHandleRecord(rec)
	if err != nil {
		return err
	}
	if err := d.PutValue(ctx, HandleKey(r.Handle), rec); err != nil {
		return fmt.Errorf("publish handle %s: %w", r.Handle, err)
	}
	return nil
}

// Resolve looks a handle up in the DHT: the record LookupHandle ranks best.
func Resolve(ctx context.Context, d *dht.IpfsDHT, handle string) (*HandleRecord, []byte, error) {
	l, err := LookupHandle(ctx, d, handle)
	if err != nil {
		return nil, nil, err
	}
	return l.Best, l.Raw, nil
}
