package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/parley-net/parley/node"
)

func chatCmd() *cli.Command {
	return &cli.Command{
		Name:      "chat",
		Usage:     "chat with a handle or '#group' interactively: lines you type are sent, incoming lines printed",
		ArgsUsage: "HANDLE|#GROUP",
		Subcommands: []*cli.Command{
			{
				Name:      "send",
				Usage:     "send one message to a handle or '#group'",
				ArgsUsage: "HANDLE|#GROUP TEXT",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return cli.Exit("usage: parley chat send HANDLE|#GROUP TEXT", exitUsage)
					}
					cl, err := dial(c)
					if err != nil {
						return err
					}
					res, err := cl.Send(c.Context, c.Args().First(), strings.Join(c.Args().Tail(), " "))
					if err != nil {
						return err
					}
					printSendResult(res)
					return sendFailure(res)
				},
			},
			{
				Name:      "history",
				Usage:     "print the conversation with a handle",
				ArgsUsage: "HANDLE",
				Flags:     []cli.Flag{&cli.IntFlag{Name: "limit", Value: 0, Usage: "only the newest N messages (0: all)"}},
				Action: func(c *cli.Context) error {
					h, err := oneArg(c, "HANDLE")
					if err != nil {
						return err
					}
					cl, err := dial(c)
					if err != nil {
						return err
					}
					msgs, err := cl.History(c.Context, h, c.Int("limit"))
					if err != nil {
						return err
					}
					for _, m := range msgs {
						printMessage(m)
					}
					return nil
				},
			},
		},
		Action: func(c *cli.Context) error {
			h, err := oneArg(c, "HANDLE")
			if err != nil {
				return err
			}
			return interactiveChat(c, h)
		},
	}
}

// sendFailure is the error (and non-zero exit) of a send that reached no
// device at all or was refused by one: the message stays in this device's
// history, but someone it was for will never get it.
func sendFailure(res *node.SendResult) error {
	reached := len(res.Delivered) + len(res.Mailbox) + len(res.Queued)
	switch {
	case len(res.Refused) > 0:
		return fmt.Errorf("refused by %d device(s): %s", len(res.Refused), oneLine(res.Refused[0].Error))
	case reached == 0:
		return errors.New("sent to no device: the conversation has no device but this one")
	}
	return nil
}

func printSendResult(res *node.SendResult) {
	line := fmt.Sprintf("delivered to %d device(s)", len(res.Delivered))
	if len(res.Mailbox) > 0 {
		line += fmt.Sprintf(", left in the mailbox of %d offline device(s)", len(res.Mailbox))
	}
	if len(res.Queued) > 0 {
		line += fmt.Sprintf(", queued for %d (retrying until they or their mailboxes take it)", len(res.Queued))
	}
	if len(res.Refused) > 0 {
		line += fmt.Sprintf(", refused by %d", len(res.Refused))
	}
	fmt.Printf("%s  [%s]\n", line, res.Message.ID)
	for _, q := range append(res.Queued, res.Refused...) {
		fmt.Printf("  %s %s: %s\n", q.Handle, shortID(q.Device), oneLine(q.Error))
	}
}

// printMessage prints one line of history; an outgoing message shows where
// it is on each device: sent (queued), mailbox, delivered or read.
func printMessage(m node.Message) {
	state := ""
	if m.Outgoing && len(m.Devices) > 0 {
		var parts []string
		for _, d := range m.Devices {
			parts = append(parts, fmt.Sprintf("%s/%s %s", d.Handle, shortID(d.Device), d.State))
		}
		state = "  [" + strings.Join(parts, ", ") + "]"
	}
	fmt.Printf("%s  %-8s %s%s\n", time.UnixMilli(m.SentMS).Format("2006-01-02 15:04:05"), m.From+":", m.Body, state)
}

func interactiveChat(c *cli.Context, with string) error {
	cl, err := dial(c)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(with, "#") {
		if _, err := cl.Whois(c.Context, with); err != nil {
			return err
		}
	}
	msgs, err := cl.History(c.Context, with, 10)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		printMessage(m)
	}
	fmt.Printf("-- chatting with %s; type a line and press Enter, Ctrl-D to leave --\n", with)
	ctx, stop := signalContext()
	defer stop()
	go cl.Events(ctx, func(e node.Event) error {
		if e.Type == "message" && e.Peer == with && e.Message.From != "" {
			printMessage(*e.Message)
		}
		return nil
	})
	lines := make(chan inputLine)
	readErr := make(chan error, 1)
	go func() {
		readErr <- readLines(os.Stdin, node.MaxBodyBytes, func(l inputLine) { lines <- l })
		close(lines)
	}()
	sent, failed := 0, 0
	for {
		select {
		case <-ctx.Done():
			return chatOutcome(sent, failed, nil)
		case l, ok := <-lines:
			if !ok {
				return chatOutcome(sent, failed, <-readErr)
			}
			if l.Size > len(l.Text) {
				failed++
				fmt.Fprintf(os.Stderr, "parley: line %d not sent: %d bytes, and a message is at most %d bytes (16 KiB)\n", l.N, l.Size, node.MaxBodyBytes)
				continue
			}
			if strings.TrimSpace(l.Text) == "" {
				continue
			}
			res, err := cl.Send(ctx, with, l.Text)
			if err != nil {
				failed++
				fmt.Fprintf(os.Stderr, "parley: line %d not sent: %s\n", l.N, oneLine(err.Error()))
				continue
			}
			if err := sendFailure(res); err != nil {
				failed++
				fmt.Fprintf(os.Stderr, "parley: line %d: %s\n", l.N, err)
				continue
			}
			sent++
			if len(res.Queued) > 0 {
				fmt.Printf("  (queued for %d device(s); will retry)\n", len(res.Queued))
			}
		}
	}
}

// chatOutcome is how an interactive chat ends: an error (and a non-zero
// exit) when a line typed was not sent or stdin could not be read.
func chatOutcome(sent, failed int, readErr error) error {
	switch {
	case readErr != nil:
		return fmt.Errorf("read input: %w (%d line(s) sent, %d not sent)", readErr, sent, failed)
	case failed > 0:
		return fmt.Errorf("%d line(s) not sent (see above); %d sent", failed, sent)
	}
	return nil
}

// inputLine is one line typed: its number, its text without the line end,
// and its full size in bytes. A line longer than the reader's limit keeps
// only its first limit+1 bytes, so Size > len(Text) marks it too long.
type inputLine struct {
	N    int
	Text string
	Size int
}

// readLines calls fn for every line of r, however long: a line of more than
// max bytes is reported (Size > len(Text)) without holding all of it in
// memory, and the lines after it are read as usual. It returns r's error,
// never io.EOF.
func readLines(r io.Reader, max int, fn func(inputLine)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	keep := max + 2 // room for a line of max bytes and its "\r\n"
	var buf []byte
	size, n := 0, 0
	var prev byte // the byte before the current fragment
	for {
		frag, err := br.ReadSlice('\n')
		size += len(frag)
		if room := keep - len(buf); room > 0 {
			buf = append(buf, frag[:min(room, len(frag))]...)
		}
		if err == bufio.ErrBufferFull {
			prev = frag[len(frag)-1]
			continue
		}
		if size > 0 {
			n++
			l := inputLine{N: n, Size: size}
			if err == nil { // the line ends in "\n", or "\r\n"
				l.Size--
				if len(frag) >= 2 && frag[len(frag)-2] == '\r' || len(frag) == 1 && prev == '\r' {
					l.Size--
				}
			}
			l.Text = string(buf[:min(len(buf), l.Size, max)])
			fn(l)
		}
		buf, size, prev = buf[:0], 0, 0
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
