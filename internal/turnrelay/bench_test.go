package turnrelay

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The benchmark runs the relay in a child process (this test binary with
// benchServerEnv set) so that its CPU time, read with syscall.Getrusage in
// the child, is the relay's alone and not the load generator's.
const benchServerEnv = "TURNRELAY_BENCH_SERVER"

// benchProfileEnv, if set, is a file the relay child writes a CPU profile
// to (go tool pprof it with the test binary).
const benchProfileEnv = "TURNRELAY_BENCH_CPUPROFILE"

func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		os.Exit(benchServer())
	}
	os.Exit(m.Run())
}

// benchServer serves TURN on 127.0.0.1 with no quotas, prints "READY
// <udp addr>", then answers each "USAGE" line on stdin with "<user µs>
// <system µs> <packets relayed>", and exits when stdin closes.
func benchServer() int {
	s, err := New(Config{
		UDPAddr: "127.0.0.1:0", RelayIPs: []netip.Addr{loopback4}, Secret: testSecret,
		AllowCIDRs: allowLoop, AllowOwnAddrs: true, MaxAllocations: NoLimit, MaxAllocationsPerUser: NoLimit, MaxAllocationsPerIP: NoLimit,
		Logger: testLogger(),
	})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	defer s.Close()
	if path := os.Getenv(benchProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	fmt.Println("READY", s.UDPAddr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		st := s.Stats()
		fmt.Println(ru.Utime.Nano()/1e3, ru.Stime.Nano()/1e3, st.ToPeerPackets+st.ToClientPackets)
	}
	return 0
}

type benchChild struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string
}

func startBenchChild(b *testing.B) *benchChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &benchChild{cmd: cmd, in: in, out: bufio.NewReader(out)}
	b.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := c.readLine(10 * time.Second)
	if err != nil || !strings.HasPrefix(line, "READY ") {
		b.Fatalf("relay child: %q, %v", line, err)
	}
	c.addr = strings.TrimPrefix(line, "READY ")
	return c
}

func (c *benchChild) readLine(d time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := c.out.ReadString('\n'); ch <- res{strings.TrimSpace(s), err} }()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(d):
		return "", fmt.Errorf("no answer from the relay child within %v", d)
	}
}

// usage is the child's CPU time (µs) and relayed packets so far.
func (c *benchChild) usage(b *testing.B) (cpuMicros, packets int64) {
	b.Helper()
	if _, err := io.WriteString(c.in, "USAGE\n"); err != nil {
		b.Fatal(err)
	}
	line, err := c.readLine(5 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	var u, s int64
	if _, err := fmt.Sscan(line, &u, &s, &packets); err != nil {
		b.Fatalf("usage line %q: %v", line, err)
	}
	return u + s, packets
}

// BenchmarkRelayOpusStreams drives the relay with concurrent relayed
// streams of Opus-sized datagrams (80 to 160 bytes) every 20 ms: each
// stream is a pion/turn client whose datagrams go through its allocation to
// an echo peer on 127.0.0.1 and back, so the relay handles two datagrams
// per send. One b.N iteration is one 20 ms tick of every stream (use
// -benchtime=250x for 5 s). Reported: datagrams relayed per second, relay
// CPU per stream in percent of one core, relay CPU per datagram, the share
// of echoes that came back, and the load generator's own CPU.
func BenchmarkRelayOpusStreams(b *testing.B) {
	for _, streams := range []int{50, 200, 500} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) { benchStreams(b, streams) })
	}
}

func benchStreams(b *testing.B, streams int) {
	child := startBenchChild(b)
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	echo.SetReadBuffer(4 << 20)
	echo.SetWriteBuffer(4 << 20)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	cred := issue(b, "bench")
	conns := make([]net.PacketConn, streams)
	var received atomic.Int64
	var wg sync.WaitGroup
	for i := range conns {
		conns[i] = allocate(b, turnClient(b, "udp", child.addr, cred.Username, cred.Password))
		wg.Add(1)
		go func(c net.PacketConn) {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := c.ReadFrom(buf); err != nil {
					return
				}
				received.Add(1)
			}
		}(conns[i])
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	// Warm up: the first write makes pion's client create the permission and
	// bind a channel; wait until every stream has had an echo.
	payload := make([]byte, 160)
	deadline := time.Now().Add(20 * time.Second)
	for received.Load() < int64(streams) {
		for _, c := range conns {
			c.WriteTo(payload[:80], echo.LocalAddr())
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d streams echoed during warm-up", received.Load(), streams)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	received.Store(0)

	var selfBefore syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &selfBefore)
	cpu0, pk0 := child.usage(b)
	start := time.Now()
	b.ResetTimer()
	tick := time.NewTicker(20 * time.Millisecond)
	sent := 0
	for i := 0; i < b.N; i++ {
		<-tick.C
		size := 80 + 80*(i%2) // alternate 80 and 160 bytes: 120 on average
		for _, c := range conns {
			if _, err := c.WriteTo(payload[:size], echo.LocalAddr()); err == nil {
				sent++
			}
		}
	}
	tick.Stop()
	b.StopTimer()
	elapsed := time.Since(start)
	cpu1, pk1 := child.usage(b)
	var selfAfter syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &selfAfter)
	time.Sleep(200 * time.Millisecond) // let the last echoes land

	wall := elapsed.Seconds()
	relayCPU := float64(cpu1-cpu0) / 1e6
	relayed := float64(pk1 - pk0)
	selfCPU := float64(selfAfter.Utime.Nano()+selfAfter.Stime.Nano()-selfBefore.Utime.Nano()-selfBefore.Stime.Nano()) / 1e9
	b.ReportMetric(relayed/wall, "relayed-pkts/s")
	b.ReportMetric(100*relayCPU/wall/float64(streams), "relay-%cpu/stream")
	if relayed > 0 {
		b.ReportMetric(1e6*relayCPU/relayed, "relay-µs/pkt")
	}
	if sent > 0 {
		b.ReportMetric(float64(received.Load())/float64(sent), "echoed/sent")
	}
	b.ReportMetric(100*selfCPU/wall, "loadgen-%cpu")
}
