package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
)

func TestConfigFile(t *testing.T) {
	type seen struct {
		Home, Level, Name string
		List              []string
		On                bool
		Wait              time.Duration
		N                 int
	}
	cases := []struct {
		name    string
		file    string
		args    []string // after "parley --config FILE"
		env     map[string]string
		want    seen
		wantErr string
	}{
		{name: "global and command keys", file: `
home = "/srv/parley"
log-level = "debug"
[probe]
name = "from-file"
list = ["a", "b"]
on = true
wait = "3s"
n = 7
`, args: []string{"probe"}, want: seen{"/srv/parley", "debug", "from-file", []string{"a", "b"}, true, 3 * time.Second, 7}},
		{name: "the command line wins", file: `
home = "/srv/parley"
[probe]
name = "from-file"
list = ["a", "b"]
`, args: []string{"--home", "/h", "probe", "--name", "typed", "--list", "c"},
			want: seen{Home: "/h", Name: "typed", List: []string{"c"}}},
		{name: "the environment wins", file: `
[probe]
name = "from-file"
`, args: []string{"probe"}, env: map[string]string{"PARLEY_PROBE_NAME": "env"}, want: seen{Name: "env"}},
		{name: "other commands' tables are not applied", file: `
[supernode]
turn-udp = "0.0.0.0:3479"
listen = ["/ip4/0.0.0.0/tcp/443"]
[lab.nat]
matrix = true
`, args: []string{"probe"}, want: seen{}},
		{name: "unknown global key", file: `hom = "/x"`, args: []string{"probe"}, wantErr: `unknown key "hom": not a global flag of parley nor a command`},
		{name: "unknown key of the command", file: "[probe]\nnmae = \"x\"", args: []string{"probe"}, wantErr: `unknown key "probe.nmae": 'parley probe' has no --nmae`},
		{name: "unknown key of another command", file: "[supernode]\nturn-udpp = \"x\"", args: []string{"probe"}, wantErr: `unknown key "supernode.turn-udpp"`},
		{name: "unknown key of a subcommand", file: "[lab.nat]\nmatrx = true", args: []string{"probe"}, wantErr: `unknown key "lab.nat.matrx": 'parley lab nat' has no --matrx`},
		{name: "a command's flag at the top", file: `turn-udp = "x"`, args: []string{"probe"}, wantErr: `unknown key "turn-udp"`},
		{name: "array for a single flag", file: "[probe]\nname = [\"a\", \"b\"]", args: []string{"probe"}, wantErr: "probe.name: an array for a flag given once"},
		{name: "command key that is not a table", file: `supernode = "yes"`, args: []string{"probe"}, wantErr: "supernode: want a table"},
		{name: "config names itself", file: `config = "other.toml"`, args: []string{"probe"}, wantErr: `unknown key "config"`},
		{name: "bad value", file: "[probe]\nn = \"seven\"", args: []string{"probe"}, wantErr: `n = "seven"`},
		{name: "bad log level", file: `log-level = "loud"`, args: []string{"probe"}, wantErr: `--log-level "loud"`},
		{name: "bad log format", file: `log-format = "xml"`, args: []string{"probe"}, wantErr: `--log-format "xml"`},
		{name: "not TOML", file: "[probe\nname =", args: []string{"probe"}, wantErr: "config "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), "parley.toml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			var got seen
			app := newApp()
			probe := &cli.Command{Name: "probe", Flags: []cli.Flag{
				&cli.StringFlag{Name: "name", EnvVars: []string{"PARLEY_PROBE_NAME"}},
				&cli.StringSliceFlag{Name: "list"},
				&cli.BoolFlag{Name: "on"},
				&cli.DurationFlag{Name: "wait"},
				&cli.IntFlag{Name: "n"},
			}, Action: func(c *cli.Context) error {
				got = seen{c.String("home"), c.String("log-level"), c.String("name"), c.StringSlice("list"), c.Bool("on"), c.Duration("wait"), c.Int("n")}
				return nil
			}}
			app.Commands = append(app.Commands, probe)
			setUsageErrors([]*cli.Command{probe})
			if tc.want.Home == "" {
				tc.want.Home = defaultHome()
			}
			err := app.Run(append([]string{"parley", "--config", path}, tc.args...))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if ec, ok := err.(cli.ExitCoder); !ok || ec.ExitCode() != exitUsage {
					t.Fatalf("error %v does not exit %d", err, exitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestDeployConfigs: the example config files in deploy/ name only flags
// that exist.
func TestDeployConfigs(t *testing.T) {
	files, err := filepath.Glob("../../deploy/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/*.toml: %v", err)
	}
	app := newApp()
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var doc map[string]any
			if _, err := toml.DecodeFile(f, &doc); err != nil {
				t.Fatal(err)
			}
			if err := checkConfig(doc, "", app.Flags, app.Commands, true); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConfigSubcommandTable: `parley outer inner` reads [outer.inner].
func TestConfigSubcommandTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.toml")
	if err := os.WriteFile(path, []byte("[outer.inner]\nname = \"deep\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got string
	app := newApp()
	outer := &cli.Command{Name: "outer", Subcommands: []*cli.Command{{Name: "inner",
		Flags:  []cli.Flag{&cli.StringFlag{Name: "name"}},
		Action: func(c *cli.Context) error { got = c.String("name"); return nil }}}}
	app.Commands = append(app.Commands, outer)
	setUsageErrors([]*cli.Command{outer})
	if err := app.Run([]string{"parley", "--config", path, "outer", "inner"}); err != nil {
		t.Fatal(err)
	}
	if got != "deep" {
		t.Fatalf("name %q, want %q from [outer.inner]", got, "deep")
	}
}
