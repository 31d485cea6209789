/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * tests/spf/test_spf_syntax.c — table tests of the RFC 7208 record checker.
 *
 * Each row is a record and what spf_syntax_record() must make of it: a
 * syntax error (permerror), or the exact rewrite libspf2 is given.  The
 * rewrites pin down the workarounds (/0 lengths, redirect placement,
 * dropped unknown modifiers) so a change to them is seen here first.
 * Then the identity-domain and query-name rules of §4.3 and RFC 1035.
 */
#include <stdio.h>
#include <string.h>

#include "auth/spf_syntax.h"

#include "tests/check.h"

#define KEY "0123456789abcdef" /* a check's /0 key */

struct good_row {
	const char *record;
	const char *rewrite;
};

static const struct good_row good[] = {
	{ "v=spf1", "v=spf1" },
	{ "v=spf1 -all", "v=spf1 -all" },
	{ "V=SpF1 A MX -ALL", "v=spf1 a mx -all" },
	{ "v=spf1 a  -all ", "v=spf1 a -all" },
	{ "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all",
	  "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all" },
	{ "v=spf1 ip4:1.1.1.1/0 -all", "v=spf1 ip4:0.0.0.0/1 ip4:128.0.0.0/1 -all" },
	{ "v=spf1 -ip6:::1.1.1.1/0", "v=spf1 -ip6:::/1 -ip6:8000::/1" },
	{ "v=spf1 ip4:1.2.3.4/32", "v=spf1 ip4:1.2.3.4/32" },
	{ "v=spf1 a/0 -all", "v=spf1 a:%{d}._spf-cidr0-4-" KEY ".smtpedge.invalid -all" },
	{ "v=spf1 mx:example.com/24//0",
	  "v=spf1 mx:example.com._spf-cidr0-6-" KEY ".smtpedge.invalid/24" },
	{ "v=spf1 ~a:example.com./0//0",
	  "v=spf1 ~a:example.com._spf-cidr0-46-" KEY ".smtpedge.invalid" },
	{ "v=spf1 a/24//64 -all", "v=spf1 a/24//64 -all" },
	{ "v=spf1 a//33 -all", "v=spf1 a//33 -all" },
	{ "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", "v=spf1 ip4:1.2.3.4 -all" },
	{ "v=spf1 default=+", "v=spf1" },
	{ "v=spf1 redirect=_spf.example.com ip4:1.2.3.4",
	  "v=spf1 ip4:1.2.3.4 redirect=_spf.example.com" },
	{ "v=spf1 redirect=t5.example.com ~all", "v=spf1 ~all" },
	{ "v=spf1 -all exp=%{d}.exp.example.com", "v=spf1 -all exp=%{d}.exp.example.com" },
	{ "v=spf1 exists:%{i}.%{l2r-}.user.%{d2} -all",
	  "v=spf1 exists:%{i}.%{l2r-}.user.%{d2} -all" },
	{ "v=spf1 exists:%{l2r+-}.user.%{D2}", "v=spf1 exists:%{l2r+-}.user.%{D2}" },
	{ "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all",
	  "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all" },
	{ "v=spf1 a:foo:bar/baz.example.com", "v=spf1 a:foo:bar/baz.example.com" },
	{ "v=spf1 a:foo.example.xn--zckzah -all", "v=spf1 a:foo.example.xn--zckzah -all" },
	{ "v=spf1 a:%{H} -all", "v=spf1 a:%{H} -all" },
	{ "v=spf1 a:mail.example...com -all", "v=spf1 a:mail.example...com -all" },
	{ "v=spf1 include:example.com ptr ptr:example.org ?all",
	  "v=spf1 include:example.com ptr ptr:example.org ?all" },
	{ "v=spf1 +all", "v=spf1 +all" },
};

static const char *const bad[] = {
	"v=spf10",
	"v=spf1mx",
	"spf1 -all",
	"v=spf1 -all moo",
	"v=spf1 moo.cow/far_out=man:dog/cat ip4:1.2.3.4 -all",
	"v=spf1 moo.cow:far_out=man:dog/cat ip4:1.2.3.4 -all",
	"v=spf1 ip4:1.2.3.4 redirect:t2.example.com",
	"v=spf1 a:foo-bar -all",
	"v=spf1 -all.",
	"v=spf1 -all:foobar",
	"v=spf1 -all/8",
	"v=spf1 ptr/0 -all",
	"v=spf1 ptr:",
	"v=spf1 a/33 -all",
	"v=spf1 a//129 -all",
	"v=spf1 a/24/64 -all",
	"v=spf1 a/032",
	"v=spf1 a:example.com:8080",
	"v=spf1 a:111.222.33.44",
	"v=spf1 a:abc.123",
	"v=spf1 a:museum",
	"v=spf1 a:museum.",
	"v=spf1 a:example.-com",
	"v=spf1 a:",
	"v=spf1 mx: -all",
	"v=spf1 include",
	"v=spf1 include:ip5.example.com/24 -all",
	"v=spf1 include: -all",
	"v=spf1 exists",
	"v=spf1 exists:",
	"v=spf1 exists:mail.example.com/24",
	"v=spf1 ip4:1.2.3.4/33 -all",
	"v=spf1 ip4:1.2.3.4/032 -all",
	"v=spf1 ip4",
	"v=spf1 ip4:1.2.3.4//32",
	"v=spf1 ip4:1.2.3.4:8080",
	"v=spf1 ip4:1.2.3",
	"v=spf1 ip4:01.2.3.4",
	"v=spf1 ip4:256.2.3.4",
	"v=spf1 -all ip6",
	"v=spf1 ip6:::1.1.1.1/129",
	"v=spf1 ip6:::1.1.1.1//33",
	"v=spf1 ip6::CAFE::BABE",
	"v=spf1 1up=foo",
	"v=spf1 =all",
	"v=spf1 -all foo=%abc",
	"v=spf1 exp= -all",
	"v=spf1 exp=-all",
	"v=spf1 redirect=-all ?all",
	"v=spf1 ?all redirect=",
	"v=spf1 exp=e13msg.example.com -all exp=e11msg.example.com",
	"v=spf1 redirect=e12.example.com -all redirect=e12.example.com",
	"v=spf1 a:%{a}.example.com -all",
	"v=spf1 -exists:%(ir).sbl.example.com ?all",
	"v=spf1 exists:foo%.sbl.example.com ?all",
	"v=spf1 exists:foo.sbl.example.com%",
	"v=spf1 -all exp=%{r}.example.com",
	"v=spf1 exists:%{d0}.example.com",
	"v=spf1 a:ctrl.example.com\rptr -all",
	"v=spf1 ip4:192.0.2.5\n include:spf.protection.outlook.com ~all",
	"v=spf1 \x80\x61:example.net -all", /* \x61 is "a" */
	"v=spf1 a:\xEF\xBB\xBFgarbage.example.net -all",
};

static void
test_records(void)
{
	char out[512], problem[128], what[160];
	size_t i;
	enum spf_syntax_status st;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		st = spf_syntax_record(good[i].record, strlen(good[i].record), KEY, out,
				       sizeof(out), problem, sizeof(problem));
		snprintf(what, sizeof(what), "good record \"%s\"", good[i].record);
		CHECK(st == SPF_SYNTAX_OK, "%s: %s", what, problem);
		if (st == SPF_SYNTAX_OK)
			CHECK(strcmp(out, good[i].rewrite) == 0, "%s: %s", what, out);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		st = spf_syntax_record(bad[i], strlen(bad[i]), KEY, out, sizeof(out), problem,
				       sizeof(problem));
		snprintf(what, sizeof(what), "bad record \"%s\" is a syntax error", bad[i]);
		CHECK(st == SPF_SYNTAX_BAD && problem[0] != '\0', "%s", what);
	}
	/* a domain-spec may end in a macro; checking needs no out buffer */
	{
		const char *ok = "v=spf1 exists:%{d}";

		CHECK(spf_syntax_record(ok, strlen(ok), NULL, NULL, 0, NULL, 0) == SPF_SYNTAX_OK,
		      "check without rewrite buffer");
	}
	/* a NUL inside the TXT data is not the end of the record */
	{
		static const char nul[] = "v=spf1 a:foo.example.com\0";

		CHECK(spf_syntax_record(nul, sizeof(nul) - 1, KEY, out, sizeof(out), problem,
					sizeof(problem)) == SPF_SYNTAX_BAD,
		      "embedded NUL is a syntax error");
	}
	/* a rewrite that does not fit is reported, never truncated */
	{
		const char *r = "v=spf1 a/0 mx/0 ip4:1.1.1.1/0 -all";

		CHECK(spf_syntax_record(r, strlen(r), KEY, out, 40, problem, sizeof(problem)) ==
			      SPF_SYNTAX_NOSPACE,
		      "rewrite overflow is SPF_SYNTAX_NOSPACE");
	}
}

static void
test_names(void)
{
	static const char *const id_ok[] = {
		"example.com",
		"example.com.",
		"a.b",
		/* a 63-octet label */
		"a12345678901234567890123456789012345678901234567890123456789012.example.com",
	};
	static const char *const id_bad[] = {
		"",
		"A2345678",
		"[1.2.3.5]",
		"a..example.com",
		".example.com",
		"example.",
		"A123456789012345678901234567890123456789012345678901234567890123.example.com",
	};
	char long_name[300];
	size_t i, base;

	for (i = 0; i < sizeof(id_ok) / sizeof(id_ok[0]); i++)
		CHECK(spf_syntax_identity_domain_ok(id_ok[i]), "identity domain ok: %s", id_ok[i]);
	for (i = 0; i < sizeof(id_bad) / sizeof(id_bad[0]); i++)
		CHECK(!spf_syntax_identity_domain_ok(id_bad[i]), "identity domain refused: %s",
		      id_bad[i]);
	memset(long_name, 'a', sizeof(long_name));
	for (i = 10; i < sizeof(long_name); i += 11)
		long_name[i] = '.';
	long_name[253] = '\0';
	CHECK(spf_syntax_query_name_ok(long_name), "253-octet name is a query name");
	long_name[253] = 'a';
	long_name[254] = '\0';
	CHECK(!spf_syntax_query_name_ok(long_name), "254-octet name is not");
	CHECK(spf_syntax_query_name_ok("museum"), "one label is a query name");

	CHECK(spf_syntax_cidr0_tag("example.com._spf-cidr0-4-" KEY ".smtpedge.invalid", KEY,
				   &base) == 4 &&
		      base == 11,
	      "cidr0 v4 tag");
	CHECK(spf_syntax_cidr0_tag("X._SPF-CIDR0-46-0123456789ABCDEF.smtpedge.invalid.", KEY,
				   &base) == 46 &&
		      base == 1,
	      "cidr0 both tag, any case, trailing dot");
	CHECK(spf_syntax_cidr0_tag("example.com", KEY, &base) == 0 && base == 11, "no cidr0 tag");
	/* a name from outside (a record, a macro, a HELO) cannot ask for /0:
	 * without the check's key the suffix is an ordinary name */
	CHECK(spf_syntax_cidr0_tag("example.com._spf-cidr0-4.smtpedge.invalid", KEY, &base) == 0 &&
		      base == 41,
	      "keyless suffix is no tag");
	CHECK(spf_syntax_cidr0_tag("example.com._spf-cidr0-4-fedcba9876543210.smtpedge.invalid",
				   KEY, &base) == 0,
	      "another key is no tag");
	CHECK(spf_syntax_cidr0_tag("example.com._spf-cidr0-4-" KEY ".smtpedge.invalid", NULL,
				   &base) == 0,
	      "no key, no tag");
}

int
main(void)
{
	test_records();
	test_names();
	return check_done();
}
