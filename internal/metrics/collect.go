package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"shd-tcp-tools/internal/connstats"
)

// conns describes a connstats source as metrics named NS_...: one snapshot per scrape, so
// the figures of one scrape agree with each other (opened = closed + open).
type conns struct {
	read                                     func() connstats.Snapshot
	accepted, opened, closed, refused, open  *prometheus.Desc
	failed, attemptFailed, relayed, connects *prometheus.Desc
}

// Conns returns a collector of the connection counts that read returns (a
// forward.Server's Stats, a tunnel's), as metrics with the prefix ns:
//
//	NS_connections_accepted_total             clients accepted
//	NS_connections_opened_total               connections opened (a destination or link reached)
//	NS_connections_closed_total{end}          opened connections that ended, by how
//	NS_connections_refused_total{reason}      clients turned away, by why
//	NS_connections_failed_total{reason}       clients never connected, by why
//	NS_connect_failures_total{reason}         connection attempts that failed, by why
//	NS_connections_open                       connections opened and not closed yet
//	NS_relayed_bytes_total{direction}         bytes delivered: to_server, to_client
//	NS_connect_duration_seconds               histogram of the time a connect took
func Conns(ns string, read func() connstats.Snapshot) prometheus.Collector { return newConns(ns, read) }

func newConns(ns string, read func() connstats.Snapshot) *conns {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
	}
	return &conns{
		read:          read,
		accepted:      d("connections_accepted_total", "Client connections accepted."),
		opened:        d("connections_opened_total", "Connections opened: the destination (or a link) reached and the relay begun."),
		closed:        d("connections_closed_total", "Opened connections that ended, by how they ended.", "end"),
		refused:       d("connections_refused_total", "Clients turned away before anything was relayed, by reason.", "reason"),
		failed:        d("connections_failed_total", "Clients whose connection could not be set up, by the reason of the last failure.", "reason"),
		attemptFailed: d("connect_failures_total", "Connection attempts to a destination that failed, by reason; a client may make several.", "reason"),
		open:          d("connections_open", "Connections opened and not closed yet."),
		relayed:       d("relayed_bytes_total", "Bytes delivered, counted as they move: to_server (from the client) and to_client.", "direction"),
		connects:      d("connect_duration_seconds", "Time from the start of the successful connect to the destination (or the wait for a link) to its success."),
	}
}

// Describe sends the descriptions of every metric.
func (c *conns) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepted, c.opened, c.closed, c.refused, c.failed, c.attemptFailed, c.open, c.relayed, c.connects} {
		ch <- d
	}
}

// Collect reads one snapshot and sends its metrics.
func (c *conns) Collect(ch chan<- prometheus.Metric) { c.send(ch, c.read()) }

// send sends the metrics of s.
func (c *conns) send(ch chan<- prometheus.Metric, s connstats.Snapshot) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.accepted, s.Accepted)
	counter(c.opened, s.Opened)
	for e, n := range s.Ended {
		counter(c.closed, n, connstats.End(e).String())
	}
	for r, n := range s.Refused {
		counter(c.refused, n, connstats.Refusal(r).String())
	}
	for f := range s.Failed {
		counter(c.failed, s.Failed[f], connstats.Failure(f).String())
		counter(c.attemptFailed, s.AttemptFailed[f], connstats.Failure(f).String())
	}
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(s.Open()))
	counter(c.relayed, s.Up, "to_server")
	counter(c.relayed, s.Down, "to_client")

	buckets := make(map[float64]uint64, len(connstats.ConnectBuckets))
	var count uint64
	for i, le := range connstats.ConnectBuckets {
		count += s.Connect[i]
		buckets[le] = count
	}
	count += s.Connect[len(connstats.ConnectBuckets)]
	ch <- prometheus.MustNewConstHistogram(c.connects, count, s.ConnectSum.Seconds(), buckets)
}

// stat is one metric family of a tool's stats S: desc, and the values it takes from one S.
type stat[S any] struct {
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	values func(s S, emit func(v float64, labels ...string))
}

// tool collects a tool's stats S, read once per scrape: its connection counts (Conns'
// metrics) and its own families.
type tool[S any] struct {
	read  func() S
	conns func(S) connstats.Snapshot
	c     *conns
	stats []stat[S]
}

func newTool[S any](ns string, read func() S, connsOf func(S) connstats.Snapshot, stats ...stat[S]) *tool[S] {
	return &tool[S]{read: read, conns: connsOf, c: newConns(ns, nil), stats: stats}
}

// Describe sends the descriptions of the connection metrics and of every family.
func (t *tool[S]) Describe(ch chan<- *prometheus.Desc) {
	t.c.Describe(ch)
	for _, st := range t.stats {
		ch <- st.desc
	}
}

// Collect reads the stats once and sends every metric.
func (t *tool[S]) Collect(ch chan<- prometheus.Metric) {
	s := t.read()
	t.c.send(ch, t.conns(s))
	for _, st := range t.stats {
		st.values(s, func(v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(st.desc, st.kind, v, labels...)
		})
	}
}

// desc describes the metric NS_NAME.
func desc(ns, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
}
