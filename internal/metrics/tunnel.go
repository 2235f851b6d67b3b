package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"shd-tcp-tools/internal/connstats"
	"shd-tcp-tools/internal/tunnel"
)

// RelayNamespace and AgentNamespace are the prefixes of listentwo's and connecttwo's
// metrics.
const (
	RelayNamespace = "listentwo"
	AgentNamespace = "connecttwo"
)

// Relay returns listentwo's registry: the standard metrics, its clients' connection
// counts (Conns, prefix listentwo; opened is a client paired with a link, the connect
// time its wait for one), and
//
//	listentwo_links_idle                          links waiting in the pool
//	listentwo_clients_waiting                     clients waiting for a link
//	listentwo_pairings_total                      clients given a link
//	listentwo_links_up_total                      links that passed the handshake
//	listentwo_handshakes_refused_total{reason}    links refused: pushed_out, silent, not_a_link,
//	                                              timeout, tls, hello_mismatch, auth, pool_full, protocol
func Relay(r *tunnel.Relay) *prometheus.Registry {
	ns := RelayNamespace
	reg := NewRegistry()
	reg.MustRegister(newTool(ns, r.Stats, func(s tunnel.RelayStats) connstats.Snapshot { return s.Conns },
		stat[tunnel.RelayStats]{desc(ns, "links_idle", "Links that passed the handshake and wait in the pool for a client."), prometheus.GaugeValue,
			func(s tunnel.RelayStats, emit func(float64, ...string)) { emit(float64(s.IdleLinks)) }},
		stat[tunnel.RelayStats]{desc(ns, "clients_waiting", "Clients waiting for an idle link."), prometheus.GaugeValue,
			func(s tunnel.RelayStats, emit func(float64, ...string)) { emit(float64(s.WaitingClients)) }},
		stat[tunnel.RelayStats]{desc(ns, "pairings_total", "Clients given a link."), prometheus.CounterValue,
			func(s tunnel.RelayStats, emit func(float64, ...string)) { emit(float64(s.Pairings)) }},
		stat[tunnel.RelayStats]{desc(ns, "links_up_total", "Links that passed the handshake and joined the pool."), prometheus.CounterValue,
			func(s tunnel.RelayStats, emit func(float64, ...string)) { emit(float64(s.LinksUp)) }},
		stat[tunnel.RelayStats]{desc(ns, "handshakes_refused_total", "Links refused before or during their handshake, by reason.", "reason"), prometheus.CounterValue,
			func(s tunnel.RelayStats, emit func(float64, ...string)) {
				for reason, n := range s.HandshakesRefused {
					emit(float64(n), reason)
				}
			}},
	))
	return reg
}

// Agent returns connecttwo's registry: the standard metrics, the connection counts of the
// taken links to the service (Conns, prefix connecttwo; accepted is a link taken, opened
// the service connected), and
//
//	connecttwo_links{state}                  links now: connecting, idle, busy
//	connecttwo_links_up_total                links that passed the handshake
//	connecttwo_reconnects_total              link attempts after a failure or a link lost
//	connecttwo_link_failures_total{reason}   link attempts that failed, by reason
func Agent(a *tunnel.Agent) *prometheus.Registry {
	ns := AgentNamespace
	reg := NewRegistry()
	reg.MustRegister(newTool(ns, a.Stats, func(s tunnel.AgentStats) connstats.Snapshot { return s.Conns },
		stat[tunnel.AgentStats]{desc(ns, "links", "Links to listentwo now, by state: connecting (and handshaking), idle (waiting to be taken), busy (taken).", "state"), prometheus.GaugeValue,
			func(s tunnel.AgentStats, emit func(float64, ...string)) {
				emit(float64(s.Connecting), "connecting")
				emit(float64(s.Idle), "idle")
				emit(float64(s.Busy), "busy")
			}},
		stat[tunnel.AgentStats]{desc(ns, "links_up_total", "Links that passed the handshake."), prometheus.CounterValue,
			func(s tunnel.AgentStats, emit func(float64, ...string)) { emit(float64(s.LinksUp)) }},
		stat[tunnel.AgentStats]{desc(ns, "reconnects_total", "Link attempts made after a failed attempt or a link lost."), prometheus.CounterValue,
			func(s tunnel.AgentStats, emit func(float64, ...string)) { emit(float64(s.Reconnects)) }},
		stat[tunnel.AgentStats]{desc(ns, "link_failures_total", "Link attempts to listentwo that failed (connect or handshake), by reason.", "reason"), prometheus.CounterValue,
			func(s tunnel.AgentStats, emit func(float64, ...string)) {
				for f, n := range s.LinkFailures {
					emit(float64(n), connstats.Failure(f).String())
				}
			}},
	))
	return reg
}
