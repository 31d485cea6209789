#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""tests/spf/spf_zone.py — a small authoritative DNS server for SPF tests.

Serves one zone, given in the RFC 7208 suite's zonedata form, on
127.0.0.1 at a port the kernel picks, from a thread.  Conventions of the
suite: SPF entries are served as TXT unless the name has TXT entries of its
own ("TXT: NONE" means none); TIMEOUT makes the server ignore queries for
types the name lacks; names match case-insensitively; a name that is not in
the zone is NXDOMAIN, a type it lacks is an empty NOERROR answer.  One
addition for our own tests: SERVFAIL answers every query for the name with
that rcode.
"""
import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset


def raw(s):
    """YAML text to DNS octets: \\xNN escapes arrive as U+00NN."""
    try:
        return s.encode('latin-1')
    except UnicodeEncodeError:
        return s.encode('utf-8')


def make_name(text):
    text = text.rstrip('.')
    if text == '':
        return dns.name.root
    return dns.name.Name([raw(l) for l in text.split('.')] + [b''])


def key_of(name):
    return tuple(l.lower() for l in name.labels)


def txt_rdata(value):
    parts = value if isinstance(value, list) else [value]
    strings = []
    for p in parts:
        b = raw(str(p))
        while len(b) > 255:
            strings.append(b[:255])
            b = b[255:]
        strings.append(b)
    if not strings:
        # "null text": no strings at all, illegal but served as is
        return dns.rdata.GenericRdata(dns.rdataclass.IN, dns.rdatatype.TXT, b'')
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)


class Zone:
    def __init__(self, zonedata):
        self.nodes = {}
        for owner, entries in (zonedata or {}).items():
            try:
                name = make_name(str(owner))
            except Exception as e:  # a name DNS cannot carry
                print('# zone name skipped: %r (%s)' % (owner, e))
                continue
            node = {'timeout': False, 'servfail': False, 'rr': {}}
            spf, txt, txt_given = [], [], False
            for e in entries or []:
                if e == 'TIMEOUT':
                    node['timeout'] = True
                    continue
                if e == 'SERVFAIL':
                    node['servfail'] = True
                    continue
                for rtype, value in e.items():
                    if rtype == 'SPF':
                        spf.append(txt_rdata(value))
                    elif rtype == 'TXT':
                        txt_given = True
                        if value != 'NONE':
                            txt.append(txt_rdata(value))
                    else:
                        self.add(node, rtype, value)
            node['rr'][dns.rdatatype.TXT] = txt if txt_given else spf
            if not node['rr'][dns.rdatatype.TXT]:
                del node['rr'][dns.rdatatype.TXT]
            self.nodes[key_of(name)] = (name, node)

    @staticmethod
    def add(node, rtype, value):
        t = dns.rdatatype.from_text(rtype)
        if rtype in ('A', 'AAAA'):
            rd = dns.rdata.from_text(dns.rdataclass.IN, t, str(value))
        elif rtype == 'MX':
            pref, target = value
            rd = dns.rdata.from_text(dns.rdataclass.IN, t, '%d .' % int(pref))
            rd = rd.replace(exchange=make_name(str(target)))
        elif rtype in ('PTR', 'CNAME'):
            rd = dns.rdata.from_text(dns.rdataclass.IN, t, '.')
            rd = rd.replace(target=make_name(str(value)))
        else:
            raise ValueError('record type %s not supported' % rtype)
        node['rr'].setdefault(t, []).append(rd)

    def answer(self, query):
        """The response, or None to stay silent (a TIMEOUT)."""
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA | dns.flags.RA
        q = query.question[0]
        hit = self.nodes.get(key_of(q.name))
        if hit is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            return resp
        owner, node = hit
        if node['servfail']:
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp
        rr = node['rr']
        if dns.rdatatype.CNAME in rr and q.rdtype != dns.rdatatype.CNAME:
            found = (dns.rdatatype.CNAME, rr[dns.rdatatype.CNAME])
        elif q.rdtype in rr:
            found = (q.rdtype, rr[q.rdtype])
        elif node['timeout']:
            return None
        else:
            return resp
        rrset = dns.rrset.RRset(q.name, dns.rdataclass.IN, found[0])
        for rd in found[1]:
            rrset.add(rd, ttl=60)
        resp.answer.append(rrset)
        return resp


class Server(threading.Thread):
    def __init__(self, zone):
        super().__init__(daemon=True)
        self.zone = zone
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False

    def run(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            try:
                query = dns.message.from_wire(data)
                resp = self.zone.answer(query)
                if resp is None:
                    continue
                wire = resp.to_wire(max_size=65535)
                limit = query.payload if query.edns >= 0 else 512
                if len(wire) > limit:
                    resp.answer = []
                    resp.flags |= dns.flags.TC
                    wire = resp.to_wire()
                self.sock.sendto(wire, peer)
            except Exception as e:
                print('# server error: %s' % e)

    def stop(self):
        self.stopping = True
        self.join()
        self.sock.close()
