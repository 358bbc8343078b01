package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// Metrics exports request counts, errors and latency by method, and the open
// sessions with their current learning rate, in the Prometheus format.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics builds the collectors; Attach a dispatcher before serving.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rewarm_requests_total", Help: "Requests handled, by method."}, []string{"method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rewarm_request_errors_total", Help: "Requests answered with an error, by method and code."},
			[]string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rewarm_request_seconds", Help: "Time to handle a request, by method.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{"method"}),
	}
	m.reg.MustRegister(m.requests, m.errors, m.latency)
	return m
}

// Observe records one request; it is the dispatcher's Options.Observe.
func (m *Metrics) Observe(method string, code pb.ErrorCode, d time.Duration) {
	m.requests.WithLabelValues(method).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
	if code != pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		m.errors.WithLabelValues(method, code.String()).Inc()
	}
}

// sessionCollector reads the dispatcher at scrape time.
type sessionCollector struct {
	d                  *dispatch.Dispatcher
	sessions, samplers *prometheus.Desc
	lr, step           *prometheus.Desc
}

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessions
	ch <- c.samplers
	ch <- c.lr
	ch <- c.step
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Status()
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(len(st.GetSessions())))
	ch <- prometheus.MustNewConstMetric(c.samplers, prometheus.GaugeValue, float64(len(st.GetSamplers())))
	for _, s := range st.GetSessions() {
		id := strconv.FormatUint(s.GetSessionId(), 10)
		ch <- prometheus.MustNewConstMetric(c.lr, prometheus.GaugeValue, s.GetLr(), id, s.GetName())
		ch <- prometheus.MustNewConstMetric(c.step, prometheus.GaugeValue, float64(s.GetStep()), id, s.GetName())
	}
}

// Attach exports d's sessions. Call it once: a second call panics, as
// registering the same collectors twice does.
func (m *Metrics) Attach(d *dispatch.Dispatcher) {
	m.reg.MustRegister(&sessionCollector{
		d:        d,
		sessions: prometheus.NewDesc("rewarm_sessions", "Open schedule sessions.", nil, nil),
		samplers: prometheus.NewDesc("rewarm_samplers", "Open replay samplers.", nil, nil),
		lr:       prometheus.NewDesc("rewarm_session_lr", "Base learning rate at the session's latest step.", []string{"session", "name"}, nil),
		step:     prometheus.NewDesc("rewarm_session_step", "The session's latest step.", []string{"session", "name"}, nil),
	})
}

// CheckLoopback refuses metrics addresses that are not on a loopback
// interface: the endpoint has no authentication.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics address %q: must be a loopback address (127.0.0.1, ::1 or localhost)", addr)
	}
	return nil
}

// Serve exposes /metrics on addr until ctx is done. It returns the bound
// address (useful with port 0) once listening. addr must name a loopback
// host ("127.0.0.1:9090", not ":9090"): the endpoint has no authentication.
func (m *Metrics) Serve(ctx context.Context, addr string) (string, error) {
	if err := CheckLoopback(addr); err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	return l.Addr().String(), nil
}
