GO      ?= go
BIN     := bin/parley
PKGS    := ./...

.PHONY: all build demo test lint fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/parley

# The embedded default: a supernode and nodes on 127.0.0.1 in one process.
demo: build
	./$(BIN) demo

# Everything, including the root-only lab tests when run as root. One package
# at a time (-p 1): the call tests are real-time audio on a 2-core machine.
test:
	$(GO) test -p 1 -count=1 -timeout 25m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# A short run of every native fuzz target (FUZZTIME=1m for longer).
FUZZTIME ?= 10s
fuzz:
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$spec/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== $$spec $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$spec || exit 1; \
	  done; \
	done

# The figures in BENCHMARKS.md.
bench:
	$(GO) test -run='^$$' -bench=BenchmarkCallSetupNode -benchtime=20x ./node/
	$(GO) test -run='^$$' -bench='BenchmarkCallSetup$$' -benchtime=20x ./media/
	$(GO) test -run='^$$' -bench=BenchmarkRelayOpusStreams -benchtime=250x ./internal/turnrelay/

clean:
	rm -rf bin
