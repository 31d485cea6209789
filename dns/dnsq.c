/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dns/dnsq.c — asynchronous single queries on the shared libunbound
 * context (see dnsq.h).
 *
 * A query is a slot of a pool allocated at create, named outside by its
 * index and a generation, so that a handle kept after the query ended
 * names nothing. Deadlines differ from query to query (a check's budget
 * shortens its last ones), so the slots waiting are kept in a binary heap
 * by deadline: O(log n) to add, cancel or expire. The lanes are only
 * free lists: a slot belongs to one lane for good and goes back to its
 * free list; the heap and the mailbox are shared.
 *
 * Why answers arrive through a queue of our own: the ub_ctx is shared,
 * and other threads call ub_process() on it too. ub_process() hands every
 * waiting answer to its callback on the calling thread, so our callback
 * may run on another thread. It therefore touches nothing but the slot's
 * mailbox: under q->lock it files the answer on q->arrived and signals an
 * eventfd; the owner takes the list in dnsq_process(). dnsq_fd() is an
 * epoll fd over ub_fd() and that eventfd.
 *
 * Cancelling (the deadline, dnsq_cancel, destroy): in thread mode,
 * ub_cancel() returning 0 means the callback will never run; otherwise the
 * answer was already taken out of the pipe, and its callback has run or
 * is running on some thread. Such a slot waits in DRAIN until the answer
 * reaches our queue: a slot is never reused while a callback may still
 * write into it.
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <unbound.h>

#include "dns/dnsq.h"

#define DNSQ_DRAIN_SLICE_MS 10

enum dnsq_state {
	DNSQ_S_FREE,  /* on the free list */
	DNSQ_S_WAIT,  /* issued; on the heap */
	DNSQ_S_DRAIN, /* given up on; its answer is still on its way to us */
};

struct dnsq_slot {
	struct dnsq *q;         /* fixed at create: the callback's way in */
	struct dnsq_slot *next; /* on q->arrived (under q->lock), or free */
	struct ub_result *res;  /* set by the callback, under q->lock */
	int err;                /* set by the callback, under q->lock */
	int async_id;           /* owner thread only, from here down */
	uint32_t gen;
	uint8_t state;
	uint8_t lane; /* fixed at create */
	uint32_t heap_pos;
	uint64_t deadline_us;
	dnsq_done_fn done;
	void *arg;
};

struct dnsq {
	struct ub_ctx *ub;
	uint32_t n_slots, inflight, draining; /* n_slots: every lane's */
	uint64_t now_us;                      /* dnsq_now() */
	struct dnsq_slot *pool;
	struct dnsq_slot *free[DNSQ_LANES];
	struct dnsq_slot **heap; /* WAIT slots, earliest deadline first */
	uint32_t heap_n;
	int efd, epfd;
	bool lock_ok;
	pthread_mutex_t lock; /* guards arrived and signalled */
	struct dnsq_slot *arrived;
	bool signalled;
	_Atomic uint64_t counters[DNSQ_C__COUNT];
};

static const char *const dnsq_counter_names[DNSQ_C__COUNT] = {
	[DNSQ_C_ISSUED] = "issued",     [DNSQ_C_ANSWERED] = "answered",
	[DNSQ_C_TIMEOUTS] = "timeouts", [DNSQ_C_CANCELLED] = "cancelled",
	[DNSQ_C_BUSY] = "busy",         [DNSQ_C_REFUSED] = "refused",
};

const char *
dnsq_counter_name(unsigned id)
{
	return id < DNSQ_C__COUNT ? dnsq_counter_names[id] : NULL;
}

uint64_t
dnsq_counter(const struct dnsq *q, unsigned id)
{
	if (id >= DNSQ_C__COUNT)
		return 0;
	return atomic_load_explicit(&q->counters[id], memory_order_relaxed);
}

/* One writer (the owner), many readers: no read-modify-write needed. */
static void
dnsq_count(struct dnsq *q, enum dnsq_counter_id id)
{
	uint64_t v = atomic_load_explicit(&q->counters[id], memory_order_relaxed);

	atomic_store_explicit(&q->counters[id], v + 1, memory_order_relaxed);
}

/* --- the deadline heap --- */

static void
dnsq_heap_set(struct dnsq *q, uint32_t i, struct dnsq_slot *s)
{
	q->heap[i] = s;
	s->heap_pos = i;
}

static void
dnsq_heap_up(struct dnsq *q, uint32_t i)
{
	struct dnsq_slot *s = q->heap[i];

	while (i > 0 && q->heap[(i - 1) / 2]->deadline_us > s->deadline_us) {
		dnsq_heap_set(q, i, q->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	dnsq_heap_set(q, i, s);
}

static void
dnsq_heap_down(struct dnsq *q, uint32_t i)
{
	struct dnsq_slot *s = q->heap[i];
	uint32_t c;

	for (;;) {
		c = 2 * i + 1;
		if (c >= q->heap_n)
			break;
		if (c + 1 < q->heap_n && q->heap[c + 1]->deadline_us < q->heap[c]->deadline_us)
			c++;
		if (q->heap[c]->deadline_us >= s->deadline_us)
			break;
		dnsq_heap_set(q, i, q->heap[c]);
		i = c;
	}
	dnsq_heap_set(q, i, s);
}

static void
dnsq_heap_remove(struct dnsq *q, struct dnsq_slot *s)
{
	uint32_t i = s->heap_pos;
	struct dnsq_slot *last = q->heap[--q->heap_n];

	if (last == s)
		return;
	dnsq_heap_set(q, i, last);
	dnsq_heap_up(q, i);
	dnsq_heap_down(q, last->heap_pos);
}

/* --- slots --- */

/*
 * The one place a slot changes state; it keeps the heap, the free list
 * and the counts in step.
 */
static void
dnsq_enter(struct dnsq *q, struct dnsq_slot *s, enum dnsq_state to)
{
	enum dnsq_state from = (enum dnsq_state)s->state;

	if (from == DNSQ_S_WAIT) {
		dnsq_heap_remove(q, s);
		q->inflight--;
	} else if (from == DNSQ_S_DRAIN) {
		q->draining--;
	}
	switch (to) {
	case DNSQ_S_FREE:
		s->gen++;
		s->done = NULL;
		s->arg = NULL;
		s->next = q->free[s->lane];
		q->free[s->lane] = s;
		break;
	case DNSQ_S_WAIT:
		q->inflight++;
		dnsq_heap_set(q, q->heap_n++, s);
		dnsq_heap_up(q, s->heap_pos);
		break;
	case DNSQ_S_DRAIN:
		q->draining++;
		s->done = NULL;
		s->arg = NULL;
		break;
	}
	s->state = (uint8_t)to;
}

/* Gives up on a waiting slot: free, or draining when its answer is
 * already on its way. */
static void
dnsq_withdraw(struct dnsq *q, struct dnsq_slot *s)
{
	dnsq_enter(q, s, ub_cancel(q->ub, s->async_id) == 0 ? DNSQ_S_FREE : DNSQ_S_DRAIN);
}

/* libunbound's callback: may run on any thread that calls ub_process(). */
static void
dnsq_ub_callback(void *mydata, int err, struct ub_result *res)
{
	struct dnsq_slot *s = mydata;
	struct dnsq *q = s->q;
	uint64_t one = 1;

	pthread_mutex_lock(&q->lock);
	s->err = err;
	s->res = res;
	s->next = q->arrived;
	q->arrived = s;
	/* inside the lock: once unlocked, q may be gone (dnsq_destroy) */
	if (!q->signalled && write(q->efd, &one, sizeof(one)) == (ssize_t)sizeof(one))
		q->signalled = true;
	pthread_mutex_unlock(&q->lock);
}

uint64_t
dnsq_issue_lane(struct dnsq *q, unsigned lane, const char *name, int type, uint32_t timeout_ms,
		dnsq_done_fn done, void *arg, uint64_t now_us)
{
	struct dnsq_slot *s;

	if (lane >= DNSQ_LANES) {
		errno = EINVAL;
		return 0;
	}
	s = q->free[lane];
	if (s == NULL) {
		dnsq_count(q, DNSQ_C_BUSY);
		errno = EBUSY;
		return 0;
	}
	/* Off the free list first: once libunbound has the query, another
	 * thread's ub_process() may run our callback, which links s->next
	 * into the arrived list at once. */
	q->free[lane] = s->next;
	s->next = NULL;
	if (ub_resolve_async(q->ub, name, type, ns_c_in, s, dnsq_ub_callback, &s->async_id) != 0) {
		s->next = q->free[lane];
		q->free[lane] = s;
		dnsq_count(q, DNSQ_C_REFUSED);
		errno = EIO;
		return 0;
	}
	s->done = done;
	s->arg = arg;
	s->deadline_us = now_us + (uint64_t)timeout_ms * 1000u;
	dnsq_enter(q, s, DNSQ_S_WAIT);
	dnsq_count(q, DNSQ_C_ISSUED);
	return (uint64_t)s->gen << 32 | ((uint64_t)(s - q->pool) + 1u);
}

uint64_t
dnsq_issue(struct dnsq *q, const char *name, int type, uint32_t timeout_ms, dnsq_done_fn done,
	   void *arg, uint64_t now_us)
{
	return dnsq_issue_lane(q, 0, name, type, timeout_ms, done, arg, now_us);
}

void
dnsq_cancel(struct dnsq *q, uint64_t handle)
{
	uint32_t i = (uint32_t)handle;
	struct dnsq_slot *s;

	if (i == 0 || i > q->n_slots)
		return;
	s = &q->pool[i - 1];
	if (s->gen != (uint32_t)(handle >> 32) || s->state != DNSQ_S_WAIT)
		return;
	dnsq_count(q, DNSQ_C_CANCELLED);
	dnsq_withdraw(q, s);
}

/* Takes what the callbacks filed, in the order it arrived. */
static struct dnsq_slot *
dnsq_take_arrived(struct dnsq *q)
{
	struct dnsq_slot *list, *rev = NULL;
	uint64_t v;

	pthread_mutex_lock(&q->lock);
	list = q->arrived;
	q->arrived = NULL;
	if (q->signalled) {
		q->signalled = false;
		if (read(q->efd, &v, sizeof(v)) < 0) {
			/* EAGAIN: nothing to clear */
		}
	}
	pthread_mutex_unlock(&q->lock);
	while (list != NULL) {
		struct dnsq_slot *next = list->next;

		list->next = rev;
		rev = list;
		list = next;
	}
	return rev;
}

static void
dnsq_deliver(struct dnsq *q)
{
	struct dnsq_slot *s = dnsq_take_arrived(q), *next;
	struct ub_result *res;
	dnsq_done_fn done;
	void *arg;
	int err;

	for (; s != NULL; s = next) {
		next = s->next;
		s->next = NULL;
		res = s->res;
		err = s->err;
		s->res = NULL;
		if (s->state != DNSQ_S_WAIT) {
			/* given up on: only its memory matters */
			ub_resolve_free(res);
			dnsq_enter(q, s, DNSQ_S_FREE);
			continue;
		}
		done = s->done;
		arg = s->arg;
		dnsq_enter(q, s, DNSQ_S_FREE);
		dnsq_count(q, DNSQ_C_ANSWERED);
		done(arg, err, res);
	}
}

void
dnsq_process(struct dnsq *q, uint64_t now_us)
{
	struct dnsq_slot *s;
	dnsq_done_fn done;
	void *arg;

	q->now_us = now_us;
	/* answers still in libunbound's pipe go through our callback too */
	(void)ub_process(q->ub);
	dnsq_deliver(q);
	while (q->heap_n > 0 && q->heap[0]->deadline_us <= now_us) {
		s = q->heap[0];
		done = s->done;
		arg = s->arg;
		dnsq_count(q, DNSQ_C_TIMEOUTS);
		dnsq_withdraw(q, s);
		done(arg, DNSQ_TIMEOUT, NULL);
	}
}

uint64_t
dnsq_now(const struct dnsq *q)
{
	return q->now_us;
}

int
dnsq_fd(const struct dnsq *q)
{
	return q->epfd;
}

int
dnsq_timeout_ms(const struct dnsq *q, uint64_t now_us)
{
	uint64_t left;

	if (q->heap_n == 0)
		return -1;
	if (q->heap[0]->deadline_us <= now_us)
		return 0;
	left = (q->heap[0]->deadline_us - now_us + 999) / 1000;
	return left > INT_MAX ? INT_MAX : (int)left;
}

uint32_t
dnsq_inflight(const struct dnsq *q)
{
	return q->inflight;
}

static int
dnsq_watch(int epfd, int fd)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.fd = fd;
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

struct dnsq *
dnsq_create(const struct dnsq_params *p)
{
	uint32_t lane_max[DNSQ_LANES];
	uint64_t total;
	struct dnsq *q;
	uint32_t i, lane, first;
	int e;

	if (p == NULL || p->ub == NULL || p->max_inflight == 0 || ub_fd(p->ub) < 0) {
		errno = EINVAL;
		return NULL;
	}
	lane_max[0] = p->max_inflight;
	total = p->max_inflight;
	for (lane = 1; lane < DNSQ_LANES; lane++) {
		lane_max[lane] = p->lane_max[lane - 1];
		total += lane_max[lane];
	}
	if (total > INT32_MAX) {
		errno = EINVAL;
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	q->efd = q->epfd = -1;
	q->ub = p->ub;
	q->n_slots = (uint32_t)total;
	if (pthread_mutex_init(&q->lock, NULL) != 0)
		goto fail;
	q->lock_ok = true;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (q->efd < 0 || q->epfd < 0 || dnsq_watch(q->epfd, q->efd) != 0 ||
	    dnsq_watch(q->epfd, ub_fd(q->ub)) != 0)
		goto fail;
	q->pool = calloc(q->n_slots, sizeof(*q->pool));
	q->heap = calloc(q->n_slots, sizeof(*q->heap));
	if (q->pool == NULL || q->heap == NULL)
		goto fail;
	/* lane 0's slots first, then lane 1's, ... */
	first = 0;
	for (lane = 0; lane < DNSQ_LANES; lane++) {
		for (i = first + lane_max[lane]; i-- > first;) {
			struct dnsq_slot *s = &q->pool[i];

			s->q = q;
			s->state = DNSQ_S_FREE;
			s->lane = (uint8_t)lane;
			s->gen = 1;
			s->next = q->free[lane];
			q->free[lane] = s;
		}
		first += lane_max[lane];
	}
	return q;
fail:
	e = errno;
	dnsq_destroy(q);
	errno = e ? e : ENOMEM;
	return NULL;
}

struct dnsq *
dnsq_destroy(struct dnsq *q)
{
	if (q == NULL)
		return NULL;
	while (q->heap_n > 0) {
		dnsq_count(q, DNSQ_C_CANCELLED);
		dnsq_withdraw(q, q->heap[0]);
	}
	/* Answers that another thread is handing us right now: wait for
	 * them, or their callback would write into freed memory. */
	while (q->draining > 0) {
		struct pollfd pfd = { .fd = q->efd, .events = POLLIN };

		(void)ub_process(q->ub);
		dnsq_deliver(q);
		if (q->draining > 0)
			(void)poll(&pfd, 1, DNSQ_DRAIN_SLICE_MS);
	}
	free(q->heap);
	free(q->pool);
	if (q->epfd >= 0)
		close(q->epfd);
	if (q->efd >= 0)
		close(q->efd);
	if (q->lock_ok) {
		/* the last callback's unlock is done once we can lock */
		pthread_mutex_lock(&q->lock);
		pthread_mutex_unlock(&q->lock);
		pthread_mutex_destroy(&q->lock);
	}
	free(q);
	return NULL;
}
