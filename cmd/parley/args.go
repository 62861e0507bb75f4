package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// permuteArgs lets flags follow positional arguments ("parley call bob
// --tone 440"), which urfave/cli v2 does not parse: for the command being
// run, it moves every flag (with its value) ahead of the positional
// arguments, and every global flag ("parley whois bob --home X") ahead of
// the command name. A command's own flag wins over a global one of the same
// name. Everything after "--" stays positional.
func permuteArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	var global []string
	out := []string{}
	// take moves the flag at args[i] (and its value) to dst; it returns the
	// index of the last argument used.
	take := func(dst *[]string, flags []cli.Flag, i int) int {
		*dst = append(*dst, args[i])
		if takesValue(flags, args[i]) && i+1 < len(args) {
			*dst = append(*dst, args[i+1])
			i++
		}
		return i
	}
	i := 1
	// Global flags, then the command and subcommand names.
	cmds := app.Commands
	flags := app.Flags
	var leaf *cli.Command
	for i < len(args) {
		a := args[i]
		if a == "--" {
			return join(args[0], global, append(out, args[i:]...))
		}
		if strings.HasPrefix(a, "-") {
			if leaf != nil && !isFlag(flags, a) && isFlag(app.Flags, a) {
				i = take(&global, app.Flags, i) + 1
				continue
			}
			i = take(&out, flags, i) + 1
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		out = append(out, a)
		leaf, cmds, flags = c, c.Subcommands, c.Flags
		i++
	}
	if leaf == nil {
		return join(args[0], global, append(out, args[i:]...))
	}
	var pos []string
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1 && isFlag(flags, a):
			i = take(&out, flags, i)
		case strings.HasPrefix(a, "-") && len(a) > 1 && lookupFlag(app.Flags, a) != nil:
			i = take(&global, app.Flags, i)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return join(args[0], global, out)
}

func join(prog string, global, rest []string) []string {
	return append(append([]string{prog}, global...), rest...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

func flagName(a string) (string, bool) {
	name := strings.TrimLeft(a, "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], true
	}
	return name, false
}

func lookupFlag(flags []cli.Flag, a string) cli.Flag {
	name, _ := flagName(a)
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func isFlag(flags []cli.Flag, a string) bool {
	name, _ := flagName(a)
	return lookupFlag(flags, a) != nil || name == "help" || name == "h"
}

// takesValue reports whether a flag token consumes the next argument.
func takesValue(flags []cli.Flag, a string) bool {
	if _, inline := flagName(a); inline {
		return false
	}
	f := lookupFlag(flags, a)
	if f == nil {
		return false
	}
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}
