/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/dkim/fuzz_dkim.c — libFuzzer target for auth/dkim.c's input side.
 *
 * Why: dkim_job_feed() splits bytes from the network into header fields and
 * body at any byte boundary; that splitter, libopendkim's signature parser
 * behind it and the result mapping must survive anything. The first input
 * byte picks the chunk size, so the same message is also fed in odd splits.
 *
 * The keys are fetched ahead as the dispatcher does (prefetch.c: the
 * header block scanned for the key records, queried through dns/dnsq.c),
 * and one invariant is checked: every key the verifier looked up was in the
 * fetched set, so the scan reads the fields as libopendkim does.
 *
 * DNS never leaves the process: the libunbound context answers from local
 * data (the RFC 8463 and RFC 6376 keys, so the seeds verify for real) and
 * says NXDOMAIN for everything else.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <unbound.h>

#include "auth/dkim.h"

#include "tests/dkim/prefetch.h"

static const char *const local_data[] = {
	"brisbane._domainkey.football.example.com. TXT "
	"\"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"",
	"test._domainkey.football.example.com. TXT \"v=DKIM1; k=rsa; "
	"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08"
	"a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+"
	"yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K"
	"4w3QIDAQAB\"",
	"brisbane._domainkey.example.com. TXT \"v=DKIM1; "
	"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeL"
	"nQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lW"
	"T947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ"
	"2QIDAQAB\"",
};

static struct dkim_verifier *verifier;
static struct ub_ctx *ub;

static struct dkim_verifier *
fuzz_verifier(void)
{
	struct dkim_params params = { .dns_timeout_ms = 1000 };
	size_t i;

	if (verifier != NULL)
		return verifier;
	ub = ub_ctx_create();
	if (ub == NULL || ub_ctx_async(ub, 1) != 0 || ub_ctx_zone_add(ub, ".", "static") != 0)
		abort();
	for (i = 0; i < sizeof(local_data) / sizeof(local_data[0]); i++)
		if (ub_ctx_data_add(ub, local_data[i]) != 0)
			abort();
	verifier = dkim_verifier_create(&params);
	if (verifier == NULL)
		abort();
	return verifier;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dkim_sig_result out[DKIM_DEFAULT_MAX_SIGNATURES + 2];
	struct dkim_job *job;
	struct dkim_keys *keys;
	size_t chunk, off = 0;
	unsigned n, i;

	if (size < 1)
		return 0;
	chunk = (size_t)data[0] + 1;
	data++;
	size--;
	job = dkim_job_begin(fuzz_verifier(), "fuzz");
	keys = dkim_prefetch(ub, fuzz_verifier(), data, size, chunk, 1000);
	if (job == NULL || keys == NULL)
		abort();
	dkim_job_use_keys(job, keys);
	while (off < size) {
		size_t take = size - off < chunk ? size - off : chunk;

		if (dkim_job_feed(job, data + off, take) != 0)
			abort();
		off += take;
	}
	(void)dkim_job_end(job, out, sizeof(out) / sizeof(out[0]), &n);
	for (i = 0; i < n; i++)
		if (dkim_outcome_name(out[i].result)[0] == 'u')
			abort(); /* an outcome outside the enum */
	if (dkim_keys_missing(keys) != 0)
		abort(); /* the verifier wanted a key the scan did not name */
	dkim_job_free(job);
	dkim_keys_free(keys);
	return 0;
}
