GO      ?= go
BIN     := bin/parley
PKGS    := ./...

.PHONY: all build build-audio image demo test lint errcheck fuzz bench clean

all: build

# A static binary (pure Go: SQLite is modernc.org/sqlite, Opus is gopus),
# for any Linux of the architecture, a scratch container or a systemd unit.
# The microphone and speaker need cgo: make build-audio.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/parley

build-audio:
	CGO_ENABLED=1 $(GO) build -trimpath -tags malgo -o $(BIN) ./cmd/parley

# The container image of deploy/Dockerfile (a static binary on scratch).
IMAGE ?= parley
image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# The embedded default: a supernode and nodes on 127.0.0.1 in one process.
demo: build
	./$(BIN) demo

# Everything, including the root-only lab tests when run as root. One package
# at a time (-p 1): the call tests are real-time audio on a 2-core machine.
test:
	$(GO) test -p 1 -count=1 -timeout 25m $(PKGS)

lint: errcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# No error dropped in the roles' code but those .errcheck-excludes lists
# with a reason (or a `_ =` with one where it is dropped). Needs the module
# proxy for errcheck itself.
ERRCHECK ?= github.com/kisielk/errcheck@v1.9.0
errcheck:
	$(GO) run $(ERRCHECK) -ignoretests -exclude .errcheck-excludes ./node/ ./supernode/... ./guestcall/

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
	$(GO) test -run='^$$' -bench=BenchmarkCallCPU -benchtime=1x -count=3 ./media/
	$(GO) test -run='^$$' -bench=BenchmarkRelayOpusStreams -benchtime=250x ./internal/turnrelay/

clean:
	rm -rf bin
