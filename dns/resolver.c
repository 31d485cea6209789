/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/resolver.c — builds the shared libunbound context (see resolver.h).
 *
 * With forwarders, the forwarders are the operator's resolvers and decide
 * local policy, so two libunbound defaults are switched off here: the
 * refusal to query 127.0.0.1 (the usual forwarder is a local unbound) and
 * the RFC 6303 blocking of private and documentation reverse zones (a
 * site's own 10/8 or fd00::/8 senders, and the lab's 2001:db8::/32, must
 * get their PTR from the forwarder, not an NXDOMAIN made up locally). In
 * full recursion both defaults stay: nobody should ask AS112 about them.
 *
 * A forwarder is itself a resolver and may spend seconds recursing for a
 * name whose servers are slow. libunbound retransmits after a timeout
 * derived from the round trips it has seen (to a local forwarder, its floor
 * of 50 ms, doubled at each timeout) and answers SERVFAIL after five
 * timeouts of one query: a forwarder's answer a few seconds late could
 * become a temperror before our own deadlines ([dns] timeout_ms, SPF's
 * budget) had their say. With a floor of one second the five timeouts span
 * about half a minute, so our deadlines decide; a datagram lost on the way
 * to the forwarder costs a second instead of 50 ms.
 */
#include <arpa/nameser.h>
#include <stdarg.h>
#include <stdio.h>

#include <unbound.h>

#include "dns/resolver.h"

/* Writes the reason and returns NULL, after freeing the half-built ctx. */
static struct ub_ctx *
resolver_fail(struct ub_ctx *ub, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return dns_resolver_destroy(ub);
}

/* Options that only make sense when we forward; see the file comment. */
static const char *const resolver_forward_options[][2] = {
	{ "do-not-query-localhost:", "no" },
	{ "unblock-lan-zones:", "yes" },
	{ "insecure-lan-zones:", "yes" },
	{ "infra-cache-min-rtt:", "1000" },
};

struct ub_ctx *
dns_resolver_create(const struct dns_resolver_params *p, char *err, size_t errlen)
{
	struct ub_result *probe;
	struct ub_ctx *ub;
	size_t i;
	int rc;

	if (p == NULL || (p->n_servers > 0 && p->servers == NULL))
		return resolver_fail(NULL, err, errlen, "no parameters");
	ub = ub_ctx_create();
	if (ub == NULL)
		return resolver_fail(NULL, err, errlen, "ub_ctx_create failed");
	rc = ub_ctx_async(ub, 1);
	if (rc != 0)
		return resolver_fail(ub, err, errlen, "ub_ctx_async: %s", ub_strerror(rc));
	/* Keep records in the order the server gave them: a sender with
	 * more PTR names than rDNS checks gets the same names checked, and
	 * so the same verdict, every time. */
	rc = ub_ctx_set_option(ub, "rrset-roundrobin:", "no");
	if (rc != 0)
		return resolver_fail(ub, err, errlen, "rrset-roundrobin: %s", ub_strerror(rc));
	for (i = 0; i < p->n_servers; i++) {
		rc = ub_ctx_set_fwd(ub, p->servers[i]);
		if (rc != 0)
			return resolver_fail(ub, err, errlen, "forwarder '%s': %s", p->servers[i],
					     ub_strerror(rc));
	}
	for (i = 0; p->n_servers > 0 &&
		    i < sizeof(resolver_forward_options) / sizeof(resolver_forward_options[0]);
	     i++) {
		rc = ub_ctx_set_option(ub, resolver_forward_options[i][0],
				       resolver_forward_options[i][1]);
		if (rc != 0)
			return resolver_fail(ub, err, errlen, "%s %s: %s",
					     resolver_forward_options[i][0],
					     resolver_forward_options[i][1], ub_strerror(rc));
	}
	if (p->trust_anchor != NULL) {
		rc = ub_ctx_add_ta_file(ub, p->trust_anchor);
		if (rc != 0)
			return resolver_fail(ub, err, errlen, "trust anchor '%s': %s",
					     p->trust_anchor, ub_strerror(rc));
	}
	/* Settings are applied when the context is first used: use it now,
	 * on a name its built-in local zones answer without any traffic, so
	 * that a bad trust anchor file fails here and not at the first
	 * sender. */
	rc = ub_resolve(ub, "localhost.", ns_t_a, ns_c_in, &probe);
	if (rc != 0)
		return resolver_fail(ub, err, errlen, "resolver setup: %s", ub_strerror(rc));
	ub_resolve_free(probe);
	return ub;
}

struct ub_ctx *
dns_resolver_destroy(struct ub_ctx *ub)
{
	if (ub != NULL)
		ub_ctx_delete(ub);
	return NULL;
}
