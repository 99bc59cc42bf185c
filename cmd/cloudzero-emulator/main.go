// Command cloudzero-emulator runs a local emulator of the CloudZero Allocation
// Telemetry API (see internal/emulator and shared/docs/cloudzero-api.md).
//
//	cloudzero-emulator [-listen 127.0.0.1:8089] [-api-key KEY] [-records-per-second N] ...
//
// The API key defaults to $CLOUDZERO_API_KEY, else to "demo-key". Point a sender at
// http://ADDR (routes /unit-cost/v1/telemetry/...), look at http://ADDR/ for the
// page and http://ADDR/emulator/ledger for what was accepted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// DemoAPIKey is the key used when neither -api-key nor CLOUDZERO_API_KEY is set.
const DemoAPIKey = "demo-key"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cloudzero-emulator:", err)
		}
		os.Exit(2)
	}
}

// run parses args, serves until ctx ends, then shuts down. When ready is not nil it
// receives the base URL once the listener is up.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("cloudzero-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8089", "address to listen on (loopback by default; port 0 picks a free port)")
	apiKey := fs.String("api-key", "", "accepted Authorization header value (default $CLOUDZERO_API_KEY, else \""+DemoAPIKey+"\")")
	rps := fs.Float64("records-per-second", 0, "rate limit in records/s, answered with 429 + Retry-After (0: no limit)")
	burst := fs.Float64("burst", 0, "rate limit bucket size in records (0: one second's worth)")
	perDay := fs.Int64("records-per-day", 0, "budget of records per UTC day (0: no limit)")
	skew := fs.Duration("max-future-skew", emulator.DefaultMaxFutureSkew, "how far in the future a timestamp may be")
	replaceNeedsStream := fs.Bool("replace-requires-stream", false, "answer 400 to replace on a stream that does not exist")
	extraKeys := fs.String("extra-filter-keys", "", "comma-separated filter keys to accept besides custom:*, tag:* and "+strings.Join(emulator.BuiltinFilterKeys, ", "))
	faults := fs.String("faults", "", "initial fault sequence as JSON (same as POST /emulator/faults), or @file")
	addrFile := fs.String("addr-file", "", "write the base URL (http://host:port) to this file once listening")
	quiet := fs.Bool("quiet", false, "do not log each request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	key := *apiKey
	if key == "" {
		key = getenv("CLOUDZERO_API_KEY")
	}
	keySource := "-api-key"
	switch {
	case *apiKey != "":
	case key != "":
		keySource = "$CLOUDZERO_API_KEY"
	default:
		key, keySource = DemoAPIKey, "the demo key \""+DemoAPIKey+"\""
	}

	cfg := emulator.Config{
		APIKey:                key,
		MaxFutureSkew:         *skew,
		ReplaceRequiresStream: *replaceNeedsStream,
		Limits:                emulator.Limits{RecordsPerSecond: *rps, Burst: *burst, RecordsPerDay: *perDay},
	}
	if *skew == 0 {
		cfg.MaxFutureSkew = -1 // an explicit 0 means no tolerance
	}
	if *extraKeys != "" {
		for _, k := range strings.Split(*extraKeys, ",") {
			if k = strings.TrimSpace(k); k != "" {
				cfg.ExtraFilterKeys = append(cfg.ExtraFilterKeys, k)
			}
		}
	}
	if *faults != "" {
		text := []byte(*faults)
		if strings.HasPrefix(*faults, "@") {
			b, err := os.ReadFile((*faults)[1:])
			if err != nil {
				return err
			}
			text = b
		}
		dec := json.NewDecoder(strings.NewReader(string(text)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg.Faults); err != nil {
			return fmt.Errorf("-faults: %w", err)
		}
	}
	logger := log.New(stderr, "cloudzero-emulator: ", log.LstdFlags)
	if !*quiet {
		cfg.Logger = logger
	}

	in, err := emulator.Start(*listen, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cloudzero-emulator listening on %s (page %s/, ledger %s/emulator/ledger; API key from %s)\n",
		in.URL, in.URL, in.URL, keySource)
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(in.URL+"\n"), 0o644); err != nil {
			_ = in.Shutdown(context.Background())
			return err
		}
	}
	if ready != nil {
		ready <- in.URL
	}

	<-ctx.Done()
	logger.Print("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return in.Shutdown(sctx)
}
