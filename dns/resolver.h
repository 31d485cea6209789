/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/resolver.h — the one libunbound context smtpedge resolves through.
 *
 * rDNS (dns/rdns.c, asynchronous, on the dispatcher thread), SPF and DKIM
 * (auth/, on pool threads) all share this context: one resolver, one cache,
 * one set of forwarders, and never /etc/resolv.conf or /etc/hosts. It runs
 * its background worker as a thread (ub_ctx_async(ctx, 1)), so blocking
 * ub_resolve() calls and ub_resolve_async()/ub_process() from several
 * threads are safe alongside each other.
 */
#ifndef SMTPEDGE_DNS_RESOLVER_H
#define SMTPEDGE_DNS_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

struct ub_ctx;

struct dns_resolver_params {
	/* Forwarders, "addr" or "addr@port". 0 = full recursion from the
	 * root hints compiled into libunbound. */
	const char *const *servers;
	uint32_t n_servers;
	/* DNSSEC trust anchor file (zone-file format, as unbound-anchor
	 * writes it), or NULL: no validation. */
	const char *trust_anchor;
};

/* The context, configured and ready; NULL and a one-line reason in err
 * ("forwarder 'x': syntax error") when a setting is refused. */
struct ub_ctx *dns_resolver_create(const struct dns_resolver_params *p, char *err, size_t errlen);

/* Only once no thread uses the context any more. Tolerates NULL; returns
 * NULL so the caller can clear its pointer in the same line. */
struct ub_ctx *dns_resolver_destroy(struct ub_ctx *ub);

#endif
