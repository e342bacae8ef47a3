// streambench: grpc-go's side of bench/stream-compare, the same workloads
// as dctx's stream_bench, with raw bytes as messages (no generated code):
//
//	streambench server ADDR               Count: request "N" -> N 64-byte messages;
//	                                      Hold: sends nothing, returns when canceled
//	streambench tput ADDR STREAMS SECONDS  server streaming, messages/s over STREAMS streams
//	streambench cancel N                  in one process: a stream of endless
//	                                      messages, canceled by the client after 10
//	                                      (early) and after 5,000 (steady: read flat
//	                                      out, the windows grown); p50/p99 us until
//	                                      the handler sees it
//	streambench idle ADDR N PID           N open idle streams: server VmRSS growth per stream
package main

import (
	"context"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "raw" }

var handlerSaw = make(chan time.Time, 1)

func handler(srv interface{}, st grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(st)
	var req []byte
	if err := st.RecvMsg(&req); err != nil {
		return err
	}
	switch method {
	case "/bench.Stream/Count":
		n, _ := strconv.Atoi(string(req))
		msg := make([]byte, 64)
		for i := 0; n <= 0 || i < n; i++ {
			if err := st.SendMsg(&msg); err != nil {
				select {
				case handlerSaw <- time.Now():
				default:
				}
				return err
			}
		}
		return nil
	default: // Hold
		<-st.Context().Done()
		return st.Context().Err()
	}
}

func serve(addr string) *grpc.Server {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := grpc.NewServer(grpc.CustomCodec(rawCodec{}), grpc.UnknownServiceHandler(handler))
	go s.Serve(lis)
	return s
}

func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return conn
}

var desc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func open(ctx context.Context, conn *grpc.ClientConn, method, req string) grpc.ClientStream {
	st, err := conn.NewStream(ctx, desc, method)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b := []byte(req)
	st.SendMsg(&b)
	st.CloseSend()
	return st
}

func tput(addr string, streams int, secs float64) {
	conn := dial(addr)
	var total int64
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st := open(ctx, conn, "/bench.Stream/Count", "0")
			var m []byte
			for time.Now().Before(deadline) {
				for j := 0; j < 256; j++ {
					if st.RecvMsg(&m) != nil {
						return
					}
				}
				atomic.AddInt64(&total, 256)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("stream-tput streams=%d msgs=%d msgs_per_s=%.0f\n", streams, total, float64(total)/el)
}

func pct(v []float64, p float64) float64 {
	sort.Float64s(v)
	return v[int(p*float64(len(v)-1))]
}

// steadyRead: messages read before a steady cancel (as stream_cancel_bench's).
const steadyRead = 5000

func cancelRun(n int) {
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	s := grpc.NewServer(grpc.CustomCodec(rawCodec{}), grpc.UnknownServiceHandler(handler))
	go s.Serve(lis)
	conn := dial(lis.Addr().String())
	one := func(read int) float64 {
		ctx, cancel := context.WithCancel(context.Background())
		st := open(ctx, conn, "/bench.Stream/Count", "0")
		var m []byte
		for j := 0; j < read; j++ {
			st.RecvMsg(&m)
		}
		t0 := time.Now()
		cancel()
		seen := <-handlerSaw
		time.Sleep(time.Millisecond)
		return float64(seen.Sub(t0).Nanoseconds()) / 1000
	}
	var early, steady []float64
	for i := 0; i < n; i++ { // alternately, so that both see the same machine
		early = append(early, one(10))
		steady = append(steady, one(steadyRead))
	}
	fmt.Printf("stream-cancel n=%d p50_us=%.1f p99_us=%.1f\n", n, pct(early, 0.5), pct(early, 0.99))
	fmt.Printf("steady-stream-cancel n=%d p50_us=%.1f p99_us=%.1f\n", n, pct(steady, 0.5), pct(steady, 0.99))
	s.Stop()
}

func rssKiB(pid string) int64 {
	b, _ := ioutil.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return -1
}

func idle(addr string, n int, pid string) {
	conn := dial(addr)
	before := rssKiB(pid)
	var streams []grpc.ClientStream
	ctx, cancel := context.WithCancel(context.Background())
	for i := 0; i < n; i++ {
		streams = append(streams, open(ctx, conn, "/bench.Stream/Hold", "x"))
	}
	time.Sleep(500 * time.Millisecond)
	after := rssKiB(pid)
	fmt.Printf("stream-idle n=%d server_rss_before_kib=%d after_kib=%d bytes_per_stream=%.0f\n",
		n, before, after, float64(after-before)*1024/float64(n))
	cancel()
	_ = streams
	_ = io.EOF
}

func main() {
	a := os.Args
	switch {
	case len(a) >= 3 && a[1] == "server":
		serve(a[2])
		select {}
	case len(a) >= 5 && a[1] == "tput":
		n, _ := strconv.Atoi(a[3])
		s, _ := strconv.ParseFloat(a[4], 64)
		tput(a[2], n, s)
	case len(a) >= 3 && a[1] == "cancel":
		n, _ := strconv.Atoi(a[2])
		cancelRun(n)
	case len(a) >= 5 && a[1] == "idle":
		n, _ := strconv.Atoi(a[3])
		idle(a[2], n, a[4])
	default:
		fmt.Fprintln(os.Stderr, "usage: streambench server ADDR | tput ADDR STREAMS SECONDS | cancel N | idle ADDR N PID")
		os.Exit(2)
	}
}
