package mailboxserver

import (
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-net/parley/mailbox"
)

// Byte quotas, the defaults of Config. Each is checked with the envelope
// being stored counted in.
const (
	DefaultMaxBytes                = 2 << 30   // all envelopes together
	DefaultMaxBytesPerIP           = 64 << 20  // from one source IP
	DefaultMaxBytesPerPrefix       = 128 << 20 // from one /24 (IPv4) or /48 (IPv6)
	DefaultMaxBytesPerRecipientSrc = 16 << 20  // for one device from one prefix
	// DefaultRecipientShare is the part of MaxPerRecipient one source prefix
	// may fill: 1/8, so it takes eight prefixes to fill a mailbox.
	DefaultRecipientShare = 8
)

// Refusal reasons: the label of parley_mailbox_refused_total and the word in
// parentheses of a put result's error.
const (
	ReasonGlobal        = "global"           // MaxBytes reached
	ReasonSourceIP      = "source-ip"        // MaxBytesPerIP reached
	ReasonSourcePrefix  = "source-prefix"    // MaxBytesPerPrefix reached
	ReasonRecipientSrc  = "recipient-source" // this prefix's share of the recipient's mailbox used up
	ReasonRecipientFull = "recipient-full"   // mailbox.MaxPerRecipient reached
	ReasonSender        = "sender"           // mailbox.MaxPerSender reached
	ReasonNotSender     = "not-sender"       // put in another device's name
	ReasonExpired       = "expired"          // expired before it arrived
)

// ErrQuota is wrapped by every quota refusal.
var ErrQuota = errors.New("mailbox quota")

// QuotaError says which quota refused an envelope.
type QuotaError struct {
	Reason string // one of the Reason constants
	Detail string
}

func (e *QuotaError) Error() string { return fmt.Sprintf("refused (%s): %s", e.Reason, e.Detail) }
func (e *QuotaError) Unwrap() error { return ErrQuota }

func refuse(reason, format string, args ...any) error {
	return &QuotaError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// sourceIP is the IP address a stream's connection comes from; a relayed
// connection counts as its relay's address. "" when there is none.
func sourceIP(c network.Conn) string {
	if c == nil || c.RemoteMultiaddr() == nil {
		return ""
	}
	var ip string
	ma.ForEach(c.RemoteMultiaddr(), func(comp ma.Component) bool {
		switch comp.Protocol().Code {
		case ma.P_IP4, ma.P_IP6:
			if a, ok := netip.AddrFromSlice(comp.RawValue()); ok {
				ip = a.Unmap().String()
			}
			return false
		}
		return true
	})
	return ip
}

// sourcePrefix is the /24 (IPv4) or /48 (IPv6) that holds ip: what one
// operator can be assumed to have many of at no cost.
func sourcePrefix(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

func validSrc(s string) bool { return net.ParseIP(s) != nil }

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// checkQuota refuses it, coming from ip, when storing it would break a
// quota. It runs inside the storing transaction.
func (s *Server) checkQuota(st *stmts, it mailbox.Item, ip string, replica bool) error {
	size := int64(len(it.Env))
	prefix := sourcePrefix(ip)
	// A total the store cannot give refuses the envelope: a quota is never
	// waved through because its query failed.
	t, err := st.quotaTotals(it.To, it.From, ip, prefix, it.To+" "+prefix)
	if err != nil {
		return err
	}
	if n := t["to"].n; n >= int64(s.cfg.MaxPerRecipient) {
		return refuse(ReasonRecipientFull, "mailbox of %s is full (%d envelopes)", shortID(it.To), s.cfg.MaxPerRecipient)
	}
	if !replica {
		if n := t["from"].n; n >= int64(s.cfg.MaxPerSender) {
			return refuse(ReasonSender, "sender quota reached (%d envelopes waiting)", s.cfg.MaxPerSender)
		}
	}
	if tot := t["all"].bytes; tot+size > s.cfg.MaxBytes {
		return refuse(ReasonGlobal, "mailbox storage is full (%s)", human(s.cfg.MaxBytes))
	}
	if ip != "" {
		if b := t["ip"].bytes; b+size > s.cfg.MaxBytesPerIP {
			return refuse(ReasonSourceIP, "%s has %s waiting (limit %s)", ip, human(b), human(s.cfg.MaxBytesPerIP))
		}
		if b := t["prefix"].bytes; b+size > s.cfg.MaxBytesPerPrefix {
			return refuse(ReasonSourcePrefix, "%s has %s waiting (limit %s)", prefix, human(b), human(s.cfg.MaxBytesPerPrefix))
		}
		cnt, b := t["to-prefix"].n, t["to-prefix"].bytes
		if cnt >= int64(s.cfg.MaxPerRecipientSrc) || b+size > s.cfg.MaxBytesPerRecipientSrc {
			return refuse(ReasonRecipientSrc, "%s has used its share of the mailbox of %s (%d envelopes, %s)",
				prefix, shortID(it.To), cnt, human(b))
		}
	}
	return nil
}

// metrics are the mailbox's Prometheus collectors.
type metrics struct {
	refused *prometheus.CounterVec
	stored  *prometheus.CounterVec // kind: "deposit" (from a device) or "replica" (from a supernode)
	handed  prometheus.Counter
}

func (s *Server) registerMetrics(reg prometheus.Registerer) error {
	s.metrics.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_mailbox_refused_total", Help: "Envelopes the mailbox refused, by reason.",
	}, []string{"reason"})
	s.metrics.stored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_mailbox_stored_total", Help: "Envelopes the mailbox took, by kind (deposit from a device, replica from a supernode).",
	}, []string{"kind"})
	s.metrics.stored.WithLabelValues("deposit")
	s.metrics.stored.WithLabelValues("replica")
	s.metrics.handed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_mailbox_fetched_total", Help: "Envelopes handed to their devices (fetched; deleted once acknowledged).",
	})
	for _, r := range []string{ReasonGlobal, ReasonSourceIP, ReasonSourcePrefix, ReasonRecipientSrc,
		ReasonRecipientFull, ReasonSender, ReasonNotSender, ReasonExpired} {
		s.metrics.refused.WithLabelValues(r) // exported as 0 before the first refusal
	}
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		s.metrics.refused, s.metrics.stored, s.metrics.handed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_mailbox_bytes_stored", Help: "Bytes of envelopes the mailbox keeps.",
		}, func() float64 { b, _ := s.Bytes(); return float64(b) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("mailbox metrics: %w", err)
		}
	}
	return nil
}

// Bytes is how many bytes of envelopes the mailbox keeps.
func (s *Server) Bytes() (int64, error) {
	_, b, err := s.st.get("all", "")
	return b, err
}

// migrate adds the columns quotas need to a database made before them.
func migrate(db *sql.DB) error {
	cols := map[string]bool{}
	rows, err := db.Query(`SELECT name FROM pragma_table_info('items')`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		cols[c] = true
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	for _, c := range []struct{ name, def string }{
		{"size", "INTEGER NOT NULL DEFAULT 0"},
		{"src_ip", "TEXT NOT NULL DEFAULT ''"},
		{"src_prefix", "TEXT NOT NULL DEFAULT ''"},
	} {
		if !cols[c.name] {
			if _, err := db.Exec(`ALTER TABLE items ADD COLUMN ` + c.name + ` ` + c.def); err != nil {
				return err
			}
		}
	}
	if _, err := db.Exec(`UPDATE items SET size=length(env) WHERE size=0`); err != nil {
		return err
	}
	return nil
}
