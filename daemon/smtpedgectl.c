/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * daemon/smtpedgectl.c — smtpedgectl, the operator's CLI.
 *
 * It speaks DPDK's telemetry protocol (v2) directly: a SOCK_SEQPACKET unix
 * socket under the EAL runtime directory, a JSON greeting from the server,
 * then one command per message and one JSON object per reply. Doing that
 * here, instead of linking DPDK, keeps the CLI a small static program that
 * runs anywhere and never touches the daemon's memory.
 *
 * Output is for people by default (indented "name value" lines) and the
 * server's JSON unchanged with --json.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "smtpedge_version.h"

#define REPLY_MAX      (1 << 20)
/* EAL's option in its one-word form; the prefix names the runtime directory
 * where the daemon's telemetry socket is. */
#define FILE_PREFIX_EQ "--file-prefix="

static void
usage(FILE *f)
{
	fprintf(f, "usage: smtpedgectl [--file-prefix P] COMMAND [--json]\n"
		   "commands:\n"
		   "  stats          counters: totals, then per worker lcore\n"
		   "  config         the configuration in effect\n"
		   "  version        the daemon's version\n"
		   "  policy show    the rules and their settings\n"
		   "  policy set RULE KEY=VALUE...\n"
		   "                 change a rule for new sessions, e.g.\n"
		   "                 policy set ipv6-ptr reply=450\n"
		   "  tls reload     load the [tls] certificates again (new sessions\n"
		   "                 get them; sessions in TLS keep theirs)\n"
		   "  raw CMD        any telemetry command, e.g. raw /ethdev/stats,0\n"
		   "options:\n"
		   "  --file-prefix P  the EAL --file-prefix smtpedge was started with\n"
		   "  --json           print the server's JSON as it is\n");
}

static void
socket_path(const char *prefix, char *out, size_t n)
{
	const char *run = "/var/run";

	if (getuid() != 0) {
		run = getenv("XDG_RUNTIME_DIR");
		if (!run)
			run = "/tmp";
	}
	snprintf(out, n, "%s/dpdk/%s/dpdk_telemetry.v2", run, prefix);
}

static int
ask(const char *path, const char *cmd, char *reply, size_t cap)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	ssize_t n;

	if (fd < 0) {
		fprintf(stderr, "smtpedgectl: socket: %s\n", strerror(errno));
		return -1;
	}
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "smtpedgectl: socket path too long: %s\n", path);
		close(fd);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr,
			"smtpedgectl: cannot connect to %s: %s (is smtpedge running, with this --file-prefix?)\n",
			path, strerror(errno));
		close(fd);
		return -1;
	}
	/* The server's greeting comes first: version, pid, output limit. */
	n = read(fd, reply, cap - 1);
	if (n <= 0 || write(fd, cmd, strlen(cmd)) < 0 || (n = read(fd, reply, cap - 1)) <= 0) {
		fprintf(stderr, "smtpedgectl: %s: no reply\n", path);
		close(fd);
		return -1;
	}
	reply[n] = '\0';
	close(fd);
	return 0;
}

/* A small JSON walker that prints what it reads as indented lines. It
 * knows only what the telemetry server writes: objects, arrays, strings
 * without escapes beyond \", numbers, true/false/null. */
struct walker {
	const char *p;
	bool bad;
};

static void
skip_ws(struct walker *w)
{
	while (isspace((unsigned char)*w->p))
		w->p++;
}

static void print_value(struct walker *w, int depth, const char *key);

static void
read_string(struct walker *w, char *out, size_t cap)
{
	size_t n = 0;

	if (*w->p != '"') {
		w->bad = true;
		return;
	}
	w->p++;
	while (*w->p && *w->p != '"') {
		if (*w->p == '\\' && w->p[1])
			w->p++;
		if (n + 1 < cap)
			out[n++] = *w->p;
		w->p++;
	}
	out[n] = '\0';
	if (*w->p != '"')
		w->bad = true;
	else
		w->p++;
}

static void
print_scalar(struct walker *w, int depth, const char *key)
{
	char val[512];
	size_t n = 0;

	if (*w->p == '"') {
		read_string(w, val, sizeof(val));
	} else {
		while (*w->p && !strchr(",}] \t\r\n", *w->p) && n + 1 < sizeof(val))
			val[n++] = *w->p++;
		val[n] = '\0';
		if (n == 0)
			w->bad = true;
	}
	printf("%*s%-28s %s\n", depth * 2, "", key ? key : "", val);
}

static void
print_object(struct walker *w, int depth)
{
	char key[256];

	w->p++;
	skip_ws(w);
	while (!w->bad && *w->p && *w->p != '}') {
		read_string(w, key, sizeof(key));
		skip_ws(w);
		if (*w->p != ':') {
			w->bad = true;
			return;
		}
		w->p++;
		skip_ws(w);
		print_value(w, depth, key);
		skip_ws(w);
		if (*w->p == ',')
			w->p++;
		skip_ws(w);
	}
	if (*w->p == '}')
		w->p++;
	else
		w->bad = true;
}

static void
print_array(struct walker *w, int depth, const char *key)
{
	const char *start = ++w->p;
	int level = 1;

	/* Arrays of scalars print on one line: "smtp_ports 25 587". */
	while (*w->p && level) {
		if (*w->p == '[' || *w->p == '{')
			level++;
		else if (*w->p == ']' || *w->p == '}')
			level--;
		w->p++;
	}
	if (level) {
		w->bad = true;
		return;
	}
	printf("%*s%-28s ", depth * 2, "", key ? key : "");
	for (; start < w->p - 1; start++)
		if (*start != '"')
			putchar(*start == ',' ? ' ' : *start);
	putchar('\n');
}

static void
print_value(struct walker *w, int depth, const char *key)
{
	if (*w->p == '{') {
		if (key)
			printf("%*s%s:\n", depth * 2, "", key);
		print_object(w, key ? depth + 1 : depth);
	} else if (*w->p == '[') {
		print_array(w, depth, key);
	} else {
		print_scalar(w, depth, key);
	}
}

/* The reply is {"<command>": value}: print the value. */
static int
print_reply(const char *json)
{
	struct walker w = { .p = json };
	char key[256];

	skip_ws(&w);
	if (*w.p != '{')
		return -1;
	w.p++;
	skip_ws(&w);
	read_string(&w, key, sizeof(key));
	skip_ws(&w);
	if (w.bad || *w.p != ':')
		return -1;
	w.p++;
	skip_ws(&w);
	if (strncmp(w.p, "null", 4) == 0) {
		fprintf(stderr, "smtpedgectl: the daemon does not know %s\n", key);
		return -1;
	}
	print_value(&w, 0, NULL);
	return w.bad ? -1 : 0;
}

/* The value of "key" in a flat JSON object, or NULL. */
static const char *
json_string(const char *json, const char *key, char *out, size_t n)
{
	char pat[64];
	const char *p;
	size_t i = 0;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(json, pat);
	if (!p)
		return NULL;
	for (p += strlen(pat); *p && *p != '"' && i + 1 < n; p++) {
		if (*p == '\\' && p[1])
			p++;
		out[i++] = *p;
	}
	out[i] = '\0';
	return out;
}

static int
run_command(const char *prefix, const char *cmd, bool json, char **reply_out)
{
	char path[256];
	char *reply = malloc(REPLY_MAX);
	int rc;

	if (!reply)
		return -1;
	socket_path(prefix, path, sizeof(path));
	rc = ask(path, cmd, reply, REPLY_MAX);
	if (rc == 0 && !reply_out) {
		if (json)
			printf("%s\n", reply);
		else if (print_reply(reply) < 0) {
			fprintf(stderr, "smtpedgectl: unexpected reply: %.200s\n", reply);
			rc = -1;
		}
	}
	if (reply_out && rc == 0)
		*reply_out = reply;
	else
		free(reply);
	return rc;
}

/*
 * Telemetry keys allow no '-', so the daemon names the rules ipv6_ptr,
 * ipv4_auth...; people see them as the config file, `policy set` and the
 * log spell them: ipv6-ptr. Rewrites each "ipvN_..." key of the reply.
 */
static void
rule_names_dashed(char *json)
{
	char *p;

	for (p = strstr(json, "\"ipv"); p; p = strstr(p + 1, "\"ipv")) {
		char *end = strchr(p + 1, '"');

		if ((p[4] == '4' || p[4] == '6') && p[5] == '_' && end && end[1] == ':')
			p[5] = '-';
	}
}

/* tls reload: its error is the daemon's one line, and exit 1. */
static int
tls_reload(const char *prefix, bool json)
{
	char *reply = NULL, msg[400];

	if (run_command(prefix, "/smtpedge/tls/reload", json, &reply) != 0)
		return 1;
	if (json)
		printf("%s\n", reply);
	if (json_string(reply, "error", msg, sizeof(msg))) {
		fprintf(stderr, "smtpedgectl: tls reload: %s\n", msg);
		free(reply);
		return 1;
	}
	if (!json)
		printf("tls: reloaded\n");
	free(reply);
	return 0;
}

/* policy show | policy set RULE KEY=VALUE... */
static int
policy_command(const char *prefix, const char *sub, const char *const *rest, unsigned n_rest,
	       bool json)
{
	char cmd[512], msg[256];
	char *reply = NULL;
	size_t off;
	unsigned i;

	if (sub && strcmp(sub, "show") == 0 && n_rest == 0) {
		if (run_command(prefix, "/smtpedge/policy", json, &reply) != 0)
			return 1;
		rule_names_dashed(reply);
		if (json)
			printf("%s\n", reply);
		else if (print_reply(reply) < 0) {
			fprintf(stderr, "smtpedgectl: unexpected reply: %.200s\n", reply);
			free(reply);
			return 1;
		}
		free(reply);
		return 0;
	}
	if (!sub || strcmp(sub, "set") != 0 || n_rest < 2) {
		fprintf(stderr, "smtpedgectl: usage: policy show | policy set RULE KEY=VALUE...\n");
		return 2;
	}
	off = (size_t)snprintf(cmd, sizeof(cmd), "/smtpedge/policy/set,%s", rest[0]);
	for (i = 1; i < n_rest && off < sizeof(cmd); i++) {
		if (!strchr(rest[i], '=')) {
			fprintf(stderr, "smtpedgectl: policy set: \"%s\" is not KEY=VALUE\n",
				rest[i]);
			return 2;
		}
		off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " %s", rest[i]);
	}
	if (run_command(prefix, cmd, json, &reply) != 0)
		return 1;
	if (json)
		printf("%s\n", reply);
	if (json_string(reply, "error", msg, sizeof(msg))) {
		fprintf(stderr, "smtpedgectl: policy set %s: %s\n", rest[0], msg);
		free(reply);
		return 1;
	}
	if (!json && json_string(reply, "now", msg, sizeof(msg)))
		printf("%s: %s\n", rest[0], msg);
	free(reply);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *prefix = "rte", *verb = NULL, *arg = NULL;
	const char *rest[16];
	unsigned n_rest = 0;
	char cmd[512];
	bool json = false;
	int i, rc;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--file-prefix") == 0 && i + 1 < argc)
			prefix = argv[++i];
		else if (strncmp(argv[i], FILE_PREFIX_EQ, strlen(FILE_PREFIX_EQ)) == 0)
			prefix = argv[i] + strlen(FILE_PREFIX_EQ);
		else if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("smtpedgectl %s\n", SMTPEDGE_VERSION);
			return 0;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "smtpedgectl: unknown option \"%s\" (try --help)\n",
				argv[i]);
			return 2;
		} else if (!verb) {
			verb = argv[i];
		} else if (!arg) {
			arg = argv[i];
		} else if (n_rest < 16) {
			rest[n_rest++] = argv[i];
		} else {
			fprintf(stderr, "smtpedgectl: unexpected argument \"%s\" (try --help)\n",
				argv[i]);
			return 2;
		}
	}
	if (!verb) {
		usage(stderr);
		return 2;
	}
	if (strcmp(verb, "policy") == 0)
		return policy_command(prefix, arg, rest, n_rest, json);
	if (strcmp(verb, "stats") == 0 || strcmp(verb, "config") == 0 ||
	    strcmp(verb, "version") == 0) {
		if (arg || n_rest) {
			fprintf(stderr, "smtpedgectl: %s takes no argument\n", verb);
			return 2;
		}
		snprintf(cmd, sizeof(cmd), "/smtpedge/%s", verb);
	} else if (strcmp(verb, "tls") == 0) {
		if (!arg || strcmp(arg, "reload") != 0 || n_rest) {
			fprintf(stderr, "smtpedgectl: usage: tls reload\n");
			return 2;
		}
		return tls_reload(prefix, json);
	} else if (strcmp(verb, "raw") == 0 && arg && !n_rest) {
		snprintf(cmd, sizeof(cmd), "%s", arg);
		json = true;
	} else {
		fprintf(stderr, "smtpedgectl: unknown command \"%s\" (try --help)\n", verb);
		return 2;
	}

	rc = run_command(prefix, cmd, json, NULL);
	return rc == 0 ? 0 : 1;
}
