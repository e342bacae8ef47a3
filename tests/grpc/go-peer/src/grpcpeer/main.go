// grpcpeer: a grpc-go peer for testing and benchmarking dctx's gRPC edge.
// Messages are raw bytes (no generated code, no protobuf):
//
//	grpcpeer serve --listen ADDR [--report FILE]
//	    answers every method; one JSON line per call start (and per call
//	    ended by its context) to FILE (appended) or stdout. Request text:
//	      "sleep DUR"        waits DUR (Go duration) or until the call ends
//	      "status CODE MSG"  returns status CODE (0..16) with message MSG
//	      anything else      replies "grpc-go:" + request
//	grpcpeer call --target ADDR --method /pkg.Svc/M --data TEXT [--timeout D]
//	    [--cancel-after D] [--md k=v]... [--n N] [--bench N]
//	    N sequential unary calls; per call prints CODE<TAB>ms<TAB>reply-or-message,
//	    or with --bench N (after 20 warm-ups) "p50_us A p90_us B p99_us C".
//	    Values of --md keys ending in -bin are hex, sent as raw bytes.
package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec passes *[]byte messages through unchanged. It satisfies both
// grpc.Codec (String; needed by the server's grpc.CustomCodec in 1.33.3,
// which has no ForceServerCodec) and encoding.Codec (Name; needed by the
// client's grpc.ForceCodec). It is never registered, so Name is not used
// for content-subtype lookups.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "raw" }

// codeNames are gRPC's canonical upper-case status code names.
var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
	"DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "CODE_" + strconv.Itoa(int(c))
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "grpcpeer:", msg)
	fmt.Fprintln(os.Stderr, "usage: grpcpeer serve --listen ADDR [--report FILE]")
	fmt.Fprintln(os.Stderr, "       grpcpeer call --target ADDR --method /p.S/M --data TEXT [--timeout D] [--cancel-after D] [--md k=v]... [--n N] [--bench N]")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage("missing mode")
	}
	switch os.Args[1] {
	case "serve":
		serveMain(os.Args[2:])
	case "call":
		callMain(os.Args[2:])
	default:
		usage("unknown mode " + strconv.Quote(os.Args[1]))
	}
}

// ---- serve ----

// reporter writes one complete JSON object per line, serialized across calls.
type reporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *reporter) emit(v map[string]interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"event": "error", "err": err.Error()})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w.Write(append(b, '\n')) // unbuffered *os.File: each line is flushed
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func serveMain(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "", "address to listen on (host:port)")
	report := fs.String("report", "", "append JSON report lines to this file (default stdout)")
	fs.Parse(args)
	if *listen == "" || fs.NArg() != 0 {
		usage("serve needs --listen ADDR")
	}
	rep := &reporter{w: os.Stdout}
	if *report != "" {
		f, err := os.OpenFile(*report, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer f.Close()
		rep.w = f
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var active sync.WaitGroup // running handlers
	s := grpc.NewServer(grpc.CustomCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ interface{}, st grpc.ServerStream) error {
			active.Add(1)
			defer active.Done()
			return handle(rep, st)
		}))
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	fmt.Printf("listening %s\n", lis.Addr()) // os.Stdout is unbuffered

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-done:
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	// Graceful stop, bounded to 2 s; then cut remaining calls and give
	// their handlers a moment to write their "ended" lines.
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		s.Stop()
		handlersDone := make(chan struct{})
		go func() { active.Wait(); close(handlersDone) }()
		select {
		case <-handlersDone:
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// handle serves one call of any method: one request message, one reply.
func handle(rep *reporter, st grpc.ServerStream) error {
	start := time.Now()
	ctx := st.Context()
	method, _ := grpc.MethodFromServerStream(st)
	var req []byte
	if err := st.RecvMsg(&req); err != nil {
		return err
	}

	var remaining interface{} // JSON null without a deadline
	if dl, ok := ctx.Deadline(); ok {
		remaining = ms(time.Until(dl))
	}
	md := map[string][]string{}
	in, _ := metadata.FromIncomingContext(ctx)
	for k, vs := range in {
		out := make([]string, len(vs))
		for i, v := range vs {
			if strings.HasSuffix(k, "-bin") { // already decoded to raw bytes by grpc-go
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			out[i] = v
		}
		md[k] = out
	}
	rep.emit(map[string]interface{}{"event": "call", "method": method,
		"remaining_ms": remaining, "metadata": md, "request": string(req)})

	text := string(req)
	var reply []byte
	switch {
	case strings.HasPrefix(text, "sleep "):
		d, err := time.ParseDuration(strings.TrimSpace(text[len("sleep "):]))
		if err != nil {
			return status.Error(codes.InvalidArgument, "bad sleep duration: "+err.Error())
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			reply = []byte("grpc-go:slept")
		case <-ctx.Done():
			rep.emit(map[string]interface{}{"event": "ended", "method": method,
				"err": ctx.Err().Error(), "after_ms": ms(time.Since(start))})
			return status.FromContextError(ctx.Err()).Err()
		}
	case strings.HasPrefix(text, "status "):
		rest := text[len("status "):]
		num, msg := rest, ""
		if i := strings.IndexByte(rest, ' '); i >= 0 {
			num, msg = rest[:i], rest[i+1:]
		}
		c, err := strconv.Atoi(num)
		if err != nil || c < 0 || c > 16 {
			return status.Error(codes.InvalidArgument, "bad status code "+strconv.Quote(num))
		}
		if c == 0 {
			reply = []byte("ok")
		} else {
			return status.Error(codes.Code(c), msg)
		}
	default:
		reply = append([]byte("grpc-go:"), req...)
	}
	return st.SendMsg(&reply)
}

// ---- call ----

// mdFlag collects repeated --md key=value flags.
type mdFlag []string

func (m *mdFlag) String() string     { return strings.Join(*m, ",") }
func (m *mdFlag) Set(s string) error { *m = append(*m, s); return nil }

func callMain(args []string) {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	target := fs.String("target", "", "server address (host:port)")
	method := fs.String("method", "", "full method name, /pkg.Service/Method")
	data := fs.String("data", "", "request bytes (text)")
	timeout := fs.Duration("timeout", 0, "per-call deadline (0: none)")
	cancelAfter := fs.Duration("cancel-after", 0, "cancel each call's context after this long (0: never)")
	n := fs.Int("n", 1, "number of sequential calls")
	bench := fs.Int("bench", 0, "after 20 warm-up calls, time N calls and print percentiles")
	var mds mdFlag
	fs.Var(&mds, "md", "metadata key=value (repeatable; value is hex for keys ending in -bin)")
	fs.Parse(args)
	if *target == "" || *method == "" || fs.NArg() != 0 || *n < 1 || *bench < 0 {
		usage("call needs --target ADDR --method /p.S/M (and N >= 1)")
	}
	var kv []string
	for _, m := range mds {
		i := strings.IndexByte(m, '=')
		if i <= 0 {
			usage("bad --md " + strconv.Quote(m) + " (want key=value)")
		}
		k, v := strings.ToLower(m[:i]), m[i+1:]
		if strings.HasSuffix(k, "-bin") {
			b, err := hex.DecodeString(v)
			if err != nil {
				usage("bad hex in --md " + strconv.Quote(m))
			}
			v = string(b)
		}
		kv = append(kv, k, v)
	}

	cc, err := grpc.Dial(*target, grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer cc.Close()

	req := []byte(*data)
	// one makes a single call; returns its status, elapsed time and reply.
	one := func() (*status.Status, time.Duration, []byte) {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if *timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, *timeout)
		} else {
			ctx, cancel = context.WithCancel(ctx)
		}
		defer cancel()
		if len(kv) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, kv...)
		}
		if *cancelAfter > 0 {
			t := time.AfterFunc(*cancelAfter, cancel)
			defer t.Stop()
		}
		var reply []byte
		t0 := time.Now()
		err := cc.Invoke(ctx, *method, &req, &reply)
		return status.Convert(err), time.Since(t0), reply
	}

	if *bench > 0 {
		for i := 0; i < 20; i++ {
			one()
		}
		us := make([]int64, *bench)
		for i := range us {
			_, d, _ := one()
			us[i] = d.Microseconds()
		}
		sort.Slice(us, func(a, b int) bool { return us[a] < us[b] })
		pct := func(p float64) int64 { return us[int(p*float64(len(us)-1))] }
		fmt.Printf("p50_us %d p90_us %d p99_us %d\n", pct(0.50), pct(0.90), pct(0.99))
		return
	}
	esc := strings.NewReplacer("\n", `\n`, "\r", `\r`)
	for i := 0; i < *n; i++ {
		st, d, reply := one()
		out := st.Message()
		if st.Code() == codes.OK {
			out = string(reply)
		}
		fmt.Printf("%s\t%.3f\t%s\n", codeName(st.Code()), ms(d), esc.Replace(out))
	}
}
