package main

import (
	"reflect"
	"testing"
)

func TestPermuteArgs(t *testing.T) {
	app := newApp()
	cases := []struct {
		name string
		in   []string
		want []string
	}{
		{"flags after handle", []string{"parley", "call", "bob", "--tone", "440", "--duration", "3s"},
			[]string{"parley", "call", "--tone", "440", "--duration", "3s", "--", "bob"}},
		{"global flags kept", []string{"parley", "--home", "/h", "call", "bob", "--speech"},
			[]string{"parley", "--home", "/h", "call", "--speech", "--", "bob"}},
		{"subcommand", []string{"parley", "chat", "send", "bob", "hello", "there"},
			[]string{"parley", "chat", "send", "--", "bob", "hello", "there"}},
		{"text that looks like a flag after --", []string{"parley", "chat", "send", "bob", "--", "-5 degrees"},
			[]string{"parley", "chat", "send", "--", "bob", "-5 degrees"}},
		{"unknown dash word is text", []string{"parley", "chat", "send", "bob", "-5"},
			[]string{"parley", "chat", "send", "--", "bob", "-5"}},
		{"inline value", []string{"parley", "chat", "history", "bob", "--limit=3"},
			[]string{"parley", "chat", "history", "--limit=3", "--", "bob"}},
		{"no command", []string{"parley", "--help"}, []string{"parley", "--help"}},
		{"global flag after the argument", []string{"parley", "whois", "bob", "--home", "/h"},
			[]string{"parley", "--home", "/h", "whois", "--", "bob"}},
		{"global flag between command and argument", []string{"parley", "whois", "--home=/h", "bob"},
			[]string{"parley", "--home=/h", "whois", "--", "bob"}},
		{"global and command flags mixed", []string{"parley", "chat", "history", "bob", "--log-level", "debug", "--limit", "3", "--home", "/h"},
			[]string{"parley", "--log-level", "debug", "--home", "/h", "chat", "history", "--limit", "3", "--", "bob"}},
		{"command flag wins over a global of the same name", []string{"parley", "daemon", "--path", "direct"},
			[]string{"parley", "daemon", "--path", "direct"}},
		{"subcommand group with global flag", []string{"parley", "id", "show", "--home", "/h"},
			[]string{"parley", "--home", "/h", "id", "show"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := permuteArgs(app, tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}
