package main

import (
	"context"
	"errors"
	"io"
	"os"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/forward"
)

// options holds the flags as typed, before they are checked.
type options struct {
	source, dest, hostFile, port, insert string
	metrics                              string
	metricsAt                            endpoint.Endpoint // metrics, parsed
	allow                                []string
	rate                                 cli.Rate
	interval, connectTimeout             cli.Seconds
	idleTimeout, grace                   cli.Seconds
	headerTimeout                        cli.Seconds
	lazy                                 bool
	sendProxy, sendProxyV2, acceptProxy  bool
	log                                  *cli.LogFlags
}

// parseFlags defines tcp-pf's flags and parses args into options, unchecked (configure
// checks them).
func parseFlags(args []string, stdout io.Writer) (*options, *cli.FlagSet, error) {
	o := &options{}
	o.interval.D = forward.DefaultInterval
	o.connectTimeout.D = forward.DefaultConnectTimeout
	o.grace.D = forward.DefaultGrace
	o.headerTimeout.D = forward.DefaultHeaderTimeout
	flags := cli.NewFlagSet(tool, help, stdout)
	flags.StringVarP(&o.source, "source", "s", "", "")
	flags.StringVarP(&o.dest, "destination", "d", "", "")
	flags.StringVarP(&o.hostFile, "host-file", "l", "", "")
	flags.StringVarP(&o.port, "port", "p", "", "")
	flags.VarP(&o.interval, "interval", "i", "")
	flags.StringArrayVarP(&o.allow, "allow", "a", nil, "")
	flags.VarP(&o.rate, "rate", "r", "")
	flags.StringVar(&o.insert, "insert", "", "")
	flags.BoolVar(&o.lazy, "lazy", false, "")
	flags.Var(&o.connectTimeout, "connect-timeout", "")
	flags.Var(&o.idleTimeout, "idle-timeout", "")
	flags.Var(&o.grace, "grace", "")
	flags.BoolVar(&o.sendProxy, "send-proxy", false, "")
	flags.BoolVar(&o.sendProxyV2, "send-proxy-v2", false, "")
	flags.BoolVar(&o.acceptProxy, "accept-proxy", false, "")
	flags.Var(&o.headerTimeout, "accept-proxy-timeout", "")
	o.log = flags.LogFlags()
	flags.StringVar(&o.metrics, "metrics", "", "")
	return o, flags, flags.Parse(args)
}

// configure checks every flag and builds the engine's config; every error is a usage error.
func configure(ctx context.Context, o *options, flags *cli.FlagSet) (endpoint.Endpoint, forward.Config, error) {
	var cfg forward.Config
	if err := flags.NoArgs(cli.Address{Flag: "destination", Form: "HOST:PORT"}, cli.Address{Flag: "source", Form: "[ADDR:]PORT"}); err != nil {
		return endpoint.Endpoint{}, cfg, err
	}
	if o.source == "" {
		return endpoint.Endpoint{}, cfg, cli.Usagef("missing -s [ADDR:]PORT: the port to listen on")
	}
	listen, err := endpoint.ParseListen(o.source)
	if err != nil {
		return listen, cfg, cli.Usagef("-s: %v", err)
	}
	switch {
	case o.dest != "" && o.hostFile != "":
		return listen, cfg, cli.Usagef("-d and -l exclude each other: give one destination or a host file")
	case o.dest == "" && o.hostFile == "":
		return listen, cfg, cli.Usagef("missing destination: give -d HOST:PORT or -l FILE [-p PORT]")
	}
	if err := checkUseless(o, flags); err != nil {
		return listen, cfg, err
	}
	if flags.Changed("metrics") {
		if o.metricsAt, err = endpoint.ParseListen(o.metrics); err != nil {
			return listen, cfg, cli.Usagef("--metrics: %v", err)
		}
	}
	if o.dest != "" {
		if cfg.Dest, err = endpoint.ParseHostPort(o.dest); err != nil {
			return listen, cfg, cli.Usagef("-d: %v", err)
		}
	} else {
		cfg.HostFile = o.hostFile
		if o.port != "" {
			if cfg.Port, err = endpoint.ParsePort(o.port); err != nil {
				return listen, cfg, cli.Usagef("-p: %v", err)
			}
		}
	}
	if o.interval.D <= 0 {
		return listen, cfg, cli.Usagef("-i %s: the interval must be more than 0 seconds", o.interval.String())
	}
	if o.connectTimeout.D <= 0 {
		return listen, cfg, cli.Usagef("--connect-timeout %s: must be more than 0 seconds", o.connectTimeout.String())
	}
	if o.headerTimeout.D <= 0 {
		return listen, cfg, cli.Usagef("--accept-proxy-timeout %s: must be more than 0 seconds", o.headerTimeout.String())
	}
	switch {
	case o.sendProxy:
		cfg.SendProxy = 1
	case o.sendProxyV2:
		cfg.SendProxy = 2
	}
	cfg.AcceptProxy = o.acceptProxy
	cfg.AcceptProxyTimeout = o.headerTimeout.D
	cfg.Interval = o.interval.D
	cfg.ConnectTimeout = o.connectTimeout.D
	cfg.IdleTimeout = o.idleTimeout.D
	cfg.Grace = o.grace.D
	if cfg.Grace == 0 {
		cfg.Grace = -1 // cut at once
	}
	cfg.Rate = o.rate.BytesPerSecond
	cfg.Lazy = o.lazy
	if cfg.Local, err = endpoint.ResolveLocal(ctx, os.Getenv(endpoint.EnvLocal)); err != nil {
		return listen, cfg, cli.AsUsage(err)
	}
	if err := endpoint.CheckFamily(endpoint.EnvLocal, cfg.Local, cfg.Dest.Host); err != nil {
		return listen, cfg, cli.AsUsage(err)
	}
	if cfg.Allow, err = allow.Parse(ctx, nil, o.allow); err != nil {
		if _, stopped := errors.AsType[*allow.StoppedError](err); stopped {
			return listen, cfg, err // a signal during a lookup: a stop, not a usage error
		}
		return listen, cfg, cli.AsUsage(err)
	}
	return listen, cfg, nil
}

// checkUseless refuses options that would do nothing with the others given, saying why: an
// option given in vain is most likely a mistake about what the command does.
func checkUseless(o *options, flags *cli.FlagSet) error {
	for _, r := range []struct {
		useless bool
		why     string
	}{
		{o.hostFile == "" && o.port != "", "-p goes with -l FILE; with -d, put the port in HOST:PORT"},
		{o.hostFile == "" && flags.Changed("interval"), "-i goes with -l FILE: with -d there are no counts to write back"},
		{!o.acceptProxy && flags.Changed("accept-proxy-timeout"), "--accept-proxy-timeout goes with --accept-proxy: without it no PROXY header is read"},
		{o.sendProxy && o.sendProxyV2, "--send-proxy and --send-proxy-v2 exclude each other: the destination reads one header"},
	} {
		if r.useless {
			return cli.Usagef("%s", r.why)
		}
	}
	return nil
}
