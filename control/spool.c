/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control/spool.c — Maildir delivery of accepted mail (see spool.h).
 *
 * The queue id is ours, made before the headers that carry it, so the spool
 * and the relay share it.
 *
 * The order is the point: the file is written in tmp/, fsync'd, renamed
 * into new/, and new/ is fsync'd, and only then does the caller tell the
 * sender 250. A crash before the rename leaves at most a file in tmp/, which
 * Maildir readers ignore; the sender was not told 250 and will retry. The
 * bytes after our Received: header are exactly the dot-unstuffed bytes the
 * sender sent, in wire form (CRLF line ends).
 *
 * Group commit: a disk flush costs about as much for ten files as for one
 * (ext4 joins concurrent fsyncs in one journal commit), so no caller waits
 * for its own. Submissions queue; one committer thread takes what has
 * queued (waiting a short window for more when it finds one alone), has its
 * syncer threads write and fsync the group's files at once, renames each
 * into new/, fsyncs new/ once for the group, and only then answers each
 * submission. While a group is on the disk the next one gathers, so under
 * load the groups grow with the disk's latency. A message that fails alone
 * (its write, fsync or rename) gets its own errno; the others commit. When
 * the fsync of new/ fails no entry of the group is known durable: every one
 * is removed and answered with that errno.
 *
 * Every file operation goes through the handles of tmp/ and new/ taken at
 * start (openat, renameat, unlinkat, and fsync of new/), so a directory
 * renamed or replaced under the spool later cannot redirect a message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/txrec.h"

#include "control/spool.h"

#define IOV_BATCH 64

/* One submission: the caller's message, our copy of its headers, and
 * where the committer keeps its file's name and fate. */
struct spool_item {
	struct spool_item *next;
	const struct chunk *msg;
	spool_done_fn *done;
	void *arg;
	int err;
	char name[400];
	size_t prefix_len;
	char prefix[];
};

struct spool {
	char hostname[256];
	int tmp_fd, new_fd; /* the directories: every file goes through them */
	atomic_uint counter;
	struct spool_params p;

	pthread_mutex_t lock;
	pthread_cond_t submitted; /* the queue grew, or closing began */
	struct spool_item *head, **tail;
	unsigned queued;  /* in the queue */
	unsigned waiting; /* queued or in the group being committed */
	bool closing;
	pthread_t committer;
	bool committer_started;
	struct spool_item **slots; /* the committer's group: max_group */

	/* The group the syncers work on: items [next, n) are still to take,
	 * left of them are not done yet. */
	pthread_cond_t work, finished;
	struct spool_item **group;
	unsigned n, next, left;
	bool syncers_stop;
	unsigned n_syncers;
	pthread_t *syncers;
	atomic_uint fsyncs; /* issued in the group being committed */
};

static atomic_uint id_counter;

void
queue_id_new(char out[24])
{
	unsigned n = atomic_fetch_add(&id_counter, 1);
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(out, 24, "%08lX%05lX%04X", (unsigned long)ts.tv_sec,
		 (unsigned long)(ts.tv_nsec / 1000) & 0xfffff, n & 0xffff);
}

static int
mkdir_p(const char *path)
{
	char buf[600], *p;

	snprintf(buf, sizeof(buf), "%s", path);
	for (p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0750) < 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(buf, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

/* A header field may not carry what the peer sent as is: CR, LF and
 * controls become '?', so a HELO cannot add header lines. */
static void
clean(char *out, size_t n, const char *in)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < n; i++)
		out[i] = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' : in[i];
	out[i] = '\0';
}

/* The HELO of "from HELO (NAME [ADDR])" is one word: as clean(), and
 * white space, parentheses, backslash, '"' and ';' become '?' too, so a HELO
 * such as "x (bank.example [IPv6:...])" cannot pose as the comment that
 * follows it, nor end the clause. */
static void
clean_word(char *out, size_t n, const char *in)
{
	size_t i;

	clean(out, n, in);
	for (i = 0; out[i]; i++)
		if (strchr(" ()\\\";", out[i]))
			out[i] = '?';
}

/* Text for the comment of "from HELO (NAME [ADDR])": as clean(), and
 * parentheses and backslashes escaped, so that a name cannot close the
 * comment (RFC 5322 3.2.2). */
static void
clean_comment(char *out, size_t n, const char *in)
{
	size_t i, o = 0;

	for (i = 0; in[i] && o + 3 < n; i++) {
		char c = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' : in[i];

		if (c == '(' || c == ')' || c == '\\')
			out[o++] = '\\';
		out[o++] = c;
	}
	out[o] = '\0';
}

size_t
spool_received(const struct txrec *rec, const char *hostname, char *out, size_t n)
{
	char addr[INET6_ADDRSTRLEN], helo[256], ptr[512], rcpt[300], date[64];
	char tls[160];
	time_t t = (time_t)(rec->time_us / 1000000);
	struct tm tm;
	int len;

	inet_ntop(rec->family == 6 ? AF_INET6 : AF_INET, rec->addr, addr, sizeof(addr));
	clean_word(helo, sizeof(helo), rec->helo[0] ? rec->helo : "unknown");
	/* Only a forward-confirmed name is the client's: a PTR anyone can
	 * write, the forward zone only its owner (Postfix says "unknown"
	 * alike). */
	clean_comment(ptr, sizeof(ptr),
		      rec->ptr == PTR_PASS && rec->ptr_name[0] ? rec->ptr_name : "unknown");
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	rcpt[0] = '\0';
	if (rec->rcpt[0] && rec->smtp.nrcpts == 1) {
		char r[260];

		clean(r, sizeof(r), rec->rcpt);
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>", r);
	}
	/* After STARTTLS: ESMTPS (RFC 3848) and, as Postfix writes it, the
	 * protocol and cipher in a comment. */
	tls[0] = '\0';
	if (rec->tls_version[0])
		snprintf(tls, sizeof(tls), "\t(using %s with cipher %s (%u/%u bits))\r\n",
			 rec->tls_version, rec->tls_cipher, rec->tls_bits, rec->tls_alg_bits);
	len = snprintf(out, n,
		       "Received: from %s (%s [%s%s])\r\n"
		       "%s"
		       "\tby %s (smtpedge) with ESMTP%s id %s%s;\r\n"
		       "\t%s\r\n",
		       helo, ptr, rec->family == 6 ? "IPv6:" : "", addr, tls, hostname,
		       rec->tls_version[0] ? "S" : "", rec->queue_id, rcpt, date);
	return len < 0 ? 0 : ((size_t)len < n ? (size_t)len : n - 1);
}

static int
write_all(int fd, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t w = writev(fd, iov, cnt);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (cnt > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int
write_message(int fd, const char *hdr, size_t hlen, const struct chunk *c)
{
	struct iovec iov[IOV_BATCH];
	int cnt = 0;

	iov[cnt].iov_base = (void *)(uintptr_t)hdr;
	iov[cnt++].iov_len = hlen;
	for (; c; c = c->next) {
		if (c->len == 0)
			continue;
		iov[cnt].iov_base = (void *)(uintptr_t)c->data;
		iov[cnt++].iov_len = c->len;
		if (cnt == IOV_BATCH) {
			if (write_all(fd, iov, cnt) < 0)
				return -1;
			cnt = 0;
		}
	}
	return cnt ? write_all(fd, iov, cnt) : 0;
}

/* Makes the item's file in tmp/: written, and (unless the group ends in
 * one syncfs) fsync'd. On failure nothing of it is left and item->err says
 * why. */
static void
write_item(struct spool *s, struct spool_item *it)
{
	unsigned n = atomic_fetch_add(&s->counter, 1);
	struct timespec ts;
	int fd;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(it->name, sizeof(it->name), "%lu.M%luP%dQ%u.%s", (unsigned long)ts.tv_sec,
		 (unsigned long)(ts.tv_nsec / 1000), (int)getpid(), n, s->hostname);
	fd = openat(s->tmp_fd, it->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		    0640);
	if (fd < 0) {
		it->err = errno;
		return;
	}
	if (write_message(fd, it->prefix, it->prefix_len, it->msg) < 0)
		goto fail;
	if (!s->p.syncfs) {
		atomic_fetch_add(&s->fsyncs, 1);
		if (fsync(fd) < 0)
			goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	return;
fail:
	it->err = errno ? errno : EIO;
	if (fd >= 0)
		close(fd);
	unlinkat(s->tmp_fd, it->name, 0);
}

/* Takes the group's next item, or NULL; with s->lock held. */
static struct spool_item *
take_item(struct spool *s)
{
	return s->group && s->next < s->n ? s->group[s->next++] : NULL;
}

static void
item_done(struct spool *s)
{
	pthread_mutex_lock(&s->lock);
	if (--s->left == 0)
		pthread_cond_signal(&s->finished);
	pthread_mutex_unlock(&s->lock);
}

static void *
syncer_thread(void *arg)
{
	struct spool *s = arg;
	struct spool_item *it;

	pthread_mutex_lock(&s->lock);
	while (!s->syncers_stop) {
		it = take_item(s);
		if (!it) {
			pthread_cond_wait(&s->work, &s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		write_item(s, it);
		item_done(s);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Every file of the group in tmp/, the syncers and this thread writing and
 * fsyncing them at once. */
static void
write_group(struct spool *s, struct spool_item **group, unsigned n)
{
	struct spool_item *it;

	pthread_mutex_lock(&s->lock);
	s->group = group;
	s->n = n;
	s->next = 0;
	s->left = n;
	pthread_cond_broadcast(&s->work);
	while ((it = take_item(s))) {
		pthread_mutex_unlock(&s->lock);
		write_item(s, it);
		pthread_mutex_lock(&s->lock);
		s->left--;
	}
	while (s->left > 0)
		pthread_cond_wait(&s->finished, &s->lock);
	s->group = NULL;
	pthread_mutex_unlock(&s->lock);
}

static void
commit_group(struct spool *s, struct spool_item **group, unsigned n)
{
	unsigned i, renamed = 0;
	int err;

	atomic_store(&s->fsyncs, 0);
	write_group(s, group, n);
	if (s->p.syncfs) {
		atomic_fetch_add(&s->fsyncs, 1);
		if (syncfs(s->tmp_fd) < 0) {
			err = errno;
			for (i = 0; i < n; i++)
				if (!group[i]->err) {
					group[i]->err = err;
					unlinkat(s->tmp_fd, group[i]->name, 0);
				}
		}
	}
	for (i = 0; i < n; i++) {
		if (group[i]->err)
			continue;
		if (renameat(s->tmp_fd, group[i]->name, s->new_fd, group[i]->name) < 0) {
			group[i]->err = errno;
			unlinkat(s->tmp_fd, group[i]->name, 0);
			continue;
		}
		renamed++;
	}
	if (renamed) {
		atomic_fetch_add(&s->fsyncs, 1);
		if (fsync(s->new_fd) < 0) {
			err = errno;
			for (i = 0; i < n; i++)
				if (!group[i]->err) {
					group[i]->err = err;
					unlinkat(s->new_fd, group[i]->name, 0);
				}
		}
	}
	/* Counted before the answers, so that a sender who has its answer
	 * sees its group counted. */
	if (s->p.on_group)
		s->p.on_group(s->p.group_arg, n, atomic_load(&s->fsyncs));
	for (i = 0; i < n; i++) {
		group[i]->done(group[i]->arg, group[i]->err);
		free(group[i]);
	}
}

/* Waits, with s->lock held, for the queue to reach a full group, for the
 * window to pass or for closing to begin. */
static void
gather(struct spool *s)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += (long)s->p.window_us * 1000;
	until.tv_sec += until.tv_nsec / 1000000000;
	until.tv_nsec %= 1000000000;
	while (s->queued < s->p.max_group && !s->closing)
		if (pthread_cond_timedwait(&s->submitted, &s->lock, &until) == ETIMEDOUT)
			break;
}

static void *
committer_thread(void *arg)
{
	struct spool *s = arg;
	struct spool_item **group = s->slots;
	unsigned n;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->head && !s->closing)
			pthread_cond_wait(&s->submitted, &s->lock);
		if (!s->head)
			break;
		/* One alone waits the window for company; a queue that grew
		 * while the last group was on the disk goes at once. */
		if (s->queued == 1)
			gather(s);
		for (n = 0; n < s->p.max_group && s->head; n++) {
			group[n] = s->head;
			s->head = s->head->next;
		}
		if (!s->head)
			s->tail = &s->head;
		s->queued -= n;
		pthread_mutex_unlock(&s->lock);
		if (s->p.stall_s)
			sleep(s->p.stall_s);
		commit_group(s, group, n);
		pthread_mutex_lock(&s->lock);
		s->waiting -= n;
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int
spool_submit(struct spool *s, const char *prefix, size_t prefix_len, const struct chunk *msg,
	     spool_done_fn *done, void *arg)
{
	struct spool_item *it;

	pthread_mutex_lock(&s->lock);
	if (s->closing || s->waiting >= s->p.max_waiting) {
		errno = s->closing ? ECANCELED : EAGAIN;
		pthread_mutex_unlock(&s->lock);
		return -1;
	}
	s->waiting++;
	pthread_mutex_unlock(&s->lock);
	it = malloc(sizeof(*it) + prefix_len);
	if (!it) {
		pthread_mutex_lock(&s->lock);
		s->waiting--;
		pthread_mutex_unlock(&s->lock);
		errno = ENOMEM;
		return -1;
	}
	it->next = NULL;
	it->msg = msg;
	it->done = done;
	it->arg = arg;
	it->err = 0;
	it->prefix_len = prefix_len;
	memcpy(it->prefix, prefix, prefix_len);
	pthread_mutex_lock(&s->lock);
	*s->tail = it;
	s->tail = &it->next;
	s->queued++;
	pthread_cond_signal(&s->submitted);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

struct sync_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void
sync_done(void *arg, int err)
{
	struct sync_wait *w = arg;

	pthread_mutex_lock(&w->lock);
	w->done = true;
	w->err = err;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int
spool_write(struct spool *s, const char *prefix, size_t prefix_len, const struct chunk *msg)
{
	struct sync_wait w = { .lock = PTHREAD_MUTEX_INITIALIZER,
			       .cond = PTHREAD_COND_INITIALIZER };

	if (spool_submit(s, prefix, prefix_len, msg, sync_done, &w) < 0)
		return -1;
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	errno = w.err;
	return w.err ? -1 : 0;
}

static int
start_threads(struct spool *s)
{
	pthread_condattr_t ca;
	unsigned i;

	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->submitted, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->finished, NULL);
	s->tail = &s->head;
	s->syncers = calloc(s->p.syncers, sizeof(*s->syncers));
	s->slots = calloc(s->p.max_group, sizeof(*s->slots));
	if (!s->syncers || !s->slots)
		return -1;
	for (i = 0; i < s->p.syncers; i++) {
		if (pthread_create(&s->syncers[i], NULL, syncer_thread, s) != 0)
			return -1;
		s->n_syncers++;
	}
	if (pthread_create(&s->committer, NULL, committer_thread, s) != 0)
		return -1;
	s->committer_started = true;
	return 0;
}

struct spool *
spool_open(const char *dir, const char *hostname, const struct spool_params *p, char *err,
	   size_t errlen)
{
	static const char *const subs[] = { "tmp", "new", "cur" };
	struct spool *s = calloc(1, sizeof(*s));
	char path[600];
	size_t i;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->tmp_fd = s->new_fd = -1;
	snprintf(s->hostname, sizeof(s->hostname), "%s", hostname);
	if (p)
		s->p = *p;
	if (!s->p.max_group)
		s->p.max_group = SPOOL_MAX_GROUP;
	if (!s->p.max_waiting)
		s->p.max_waiting = SPOOL_MAX_WAITING;
	if (!s->p.window_us)
		s->p.window_us = SPOOL_WINDOW_US;
	if (!s->p.syncers)
		s->p.syncers = SPOOL_SYNCERS;
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
		if (mkdir_p(path) < 0) {
			snprintf(err, errlen, "spool %s: cannot create %s: %s", dir, path,
				 strerror(errno));
			spool_close(s);
			return NULL;
		}
	}
	snprintf(path, sizeof(path), "%s/tmp", dir);
	s->tmp_fd = open(path, O_RDONLY | O_DIRECTORY);
	snprintf(path, sizeof(path), "%s/new", dir);
	s->new_fd = open(path, O_RDONLY | O_DIRECTORY);
	if (s->tmp_fd < 0 || s->new_fd < 0) {
		snprintf(err, errlen, "spool %s: %s", dir, strerror(errno));
		spool_close(s);
		return NULL;
	}
	if (start_threads(s) < 0) {
		snprintf(err, errlen, "spool %s: cannot start its threads", dir);
		spool_close(s);
		return NULL;
	}
	return s;
}

void
spool_close(struct spool *s)
{
	unsigned i;

	if (!s)
		return;
	if (s->tail) { /* the lock and the conditions were made */
		pthread_mutex_lock(&s->lock);
		s->closing = true;
		pthread_cond_signal(&s->submitted);
		pthread_mutex_unlock(&s->lock);
		if (s->committer_started)
			pthread_join(s->committer, NULL);
		pthread_mutex_lock(&s->lock);
		s->syncers_stop = true;
		pthread_cond_broadcast(&s->work);
		pthread_mutex_unlock(&s->lock);
		for (i = 0; i < s->n_syncers; i++)
			pthread_join(s->syncers[i], NULL);
		free(s->syncers);
		free(s->slots);
		pthread_cond_destroy(&s->submitted);
		pthread_cond_destroy(&s->work);
		pthread_cond_destroy(&s->finished);
		pthread_mutex_destroy(&s->lock);
	}
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->new_fd >= 0)
		close(s->new_fd);
	free(s);
}
