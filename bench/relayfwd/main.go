// Command relayfwd is the floor of bench/relay.sh: the plainest Go TCP forwarder, two
// io.Copy calls per connection between raw *net.TCPConn values (which splice), with no
// logging, limits or close handling beyond closing both sides when either copy ends.
//
//	relayfwd -l 127.0.0.1:7000 -d 127.0.0.1:7001
package main

import (
	"flag"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("l", "", "address to listen on")
	dest := flag.String("d", "", "address to forward to")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			s, err := net.Dial("tcp", *dest)
			if err != nil {
				return
			}
			defer s.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(s, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, s); done <- struct{}{} }()
			<-done
		}()
	}
}
