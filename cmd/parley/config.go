package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
)

// A config file (--config FILE, PARLEY_CONFIG) is TOML with one key per
// flag, named as the flag is: the global flags at the top, each command's
// flags in a table named after the command ("[supernode]", "[relay]",
// "[lab.nat]" for `parley lab nat`). A repeatable flag takes an array.
//
//	home = "/var/lib/parley"
//	log-format = "json"
//
//	[supernode]
//	listen = ["/ip4/0.0.0.0/tcp/443", "/ip4/0.0.0.0/udp/4100/quic-v1"]
//	turn-udp = "0.0.0.0:3479"
//
// The command line and the environment win over the file. Every key must
// name a flag (or a command's table): a typo is an error, not a flag quietly
// left at its default.

// applyConfig sets the flags the config file names and the command line and
// environment leave unset: the global ones and those of the command being
// run. It checks the whole file, so a typo in another command's table is an
// error too.
func applyConfig(c *cli.Context) error {
	// The root context holds the global flags: the outermost one of a
	// command (urfave/cli wraps it in one that has none).
	var root *cli.Context
	for _, l := range c.Lineage() {
		if l.Command != nil {
			root = l
		}
	}
	path := root.String("config")
	if path == "" {
		return nil
	}
	var doc map[string]any
	if _, err := toml.DecodeFile(path, &doc); err != nil {
		return cli.Exit(fmt.Sprintf("config %s: %s", path, oneLine(err.Error())), exitUsage)
	}
	fail := func(format string, args ...any) error {
		return cli.Exit(fmt.Sprintf("config %s: ", path)+fmt.Sprintf(format, args...), exitUsage)
	}
	if err := checkConfig(doc, "", c.App.Flags, c.App.Commands, true); err != nil {
		return fail("%v", err)
	}
	// The command being run: its table, if any.
	table, _ := lookupTable(doc, strings.Fields(cmdPath(c)))
	for _, set := range []struct {
		ctx   *cli.Context
		flags []cli.Flag
		keys  map[string]any
	}{{root, c.App.Flags, doc}, {c, commandFlags(c), table}} {
		for _, k := range sortedKeys(set.keys) {
			f := findFlag(set.flags, k)
			if f == nil || set.ctx.IsSet(k) {
				continue // a command's table, or given on the command line
			}
			vals, err := configValues(set.keys[k], isSlice(f))
			if err != nil {
				return fail("%s: %v", k, err)
			}
			for _, v := range vals {
				if err := set.ctx.Set(k, v); err != nil {
					return fail("%s = %q: %v", k, v, err)
				}
			}
		}
	}
	if _, err := parseLevel(root.String("log-level")); err != nil && root.String("log-level") != "" {
		return err
	}
	return checkFormat(root.String("log-format"))
}

func commandFlags(c *cli.Context) []cli.Flag {
	if c.Command == nil {
		return nil
	}
	return c.Command.Flags
}

// checkConfig checks a table's keys: each names a flag of flags, or (when
// commands is not nil) a command whose table it is.
func checkConfig(table map[string]any, where string, flags []cli.Flag, commands []*cli.Command, top bool) error {
	for _, k := range sortedKeys(table) {
		name := k
		if where != "" {
			name = where + "." + k
		}
		if f := findFlag(flags, k); f != nil && k != "config" && k != "help" {
			if _, err := configValues(table[k], isSlice(f)); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			continue
		}
		if cmd := findCommand(commands, k); cmd != nil && cmd.Name != "help" {
			sub, ok := table[k].(map[string]any)
			if !ok {
				return fmt.Errorf("%s: want a table of the flags of 'parley %s'", name, strings.ReplaceAll(name, ".", " "))
			}
			if err := checkConfig(sub, name, cmd.Flags, cmd.Subcommands, false); err != nil {
				return err
			}
			continue
		}
		if top {
			return fmt.Errorf("unknown key %q: not a global flag of parley nor a command", name)
		}
		return fmt.Errorf("unknown key %q: 'parley %s' has no --%s", name, strings.ReplaceAll(where, ".", " "), k)
	}
	return nil
}

func lookupTable(doc map[string]any, path []string) (map[string]any, bool) {
	t := doc
	for _, p := range path {
		sub, ok := t[p].(map[string]any)
		if !ok {
			return nil, false
		}
		t = sub
	}
	return t, true
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func isSlice(f cli.Flag) bool {
	switch f.(type) {
	case *cli.StringSliceFlag, *cli.IntSliceFlag, *cli.Int64SliceFlag, *cli.Float64SliceFlag, *cli.UintSliceFlag, *cli.Uint64SliceFlag:
		return true
	}
	return false
}

// configValues turns a TOML value into the strings a flag is set with.
func configValues(v any, slice bool) ([]string, error) {
	if arr, ok := v.([]any); ok {
		if !slice {
			return nil, fmt.Errorf("an array for a flag given once")
		}
		var out []string
		for _, e := range arr {
			s, err := configScalar(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := configScalar(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func configScalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	}
	return "", fmt.Errorf("a %T, want a string, number or boolean", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// configFlag is --config.
var configFlag = &cli.StringFlag{Name: "config", EnvVars: []string{"PARLEY_CONFIG"},
	Usage: "read flags from a TOML `FILE`: global flags at the top, a command's in a table named after it ([supernode]); the command line wins"}
