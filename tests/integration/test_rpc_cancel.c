/*
 * test_rpc_cancel.c - cancels across the wire: a caller's cancel pushed
 * from the canceling thread with its cause, reaching a running handler and
 * the hop after it; what the cancel did, as both sides count it (stopped,
 * prevented, too late), for a call running, queued, finished, or overtaken
 * by its own cancel. Raw sessions stand in for a peer that sends the
 * cancel first or names its call by id; a relay for a network that
 * reorders or holds frames.
 */
#include <stdio.h>
#include <string.h>

#include "rpc_testutil.h"

static void cancel_cause_reaches_the_running_handler_which_reports_stopped(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    int64_t t_cancel = dctx_now();
    dctx_cancel_cause(ctx, DCTX_ABORTED, "user pressed stop");

    rt_finish(h, SEC(5));
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_CANCELED);
    assert_contains(o.message, "user pressed stop");
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);

    /* what the handler saw, measured there */
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_int_equal(p.cause, DCTX_ABORTED);
    assert_true(p.has_cause_msg);
    assert_string_equal(p.cause_msg, "user pressed stop");
    assert_ns_in(p.returned_ns - t_cancel, 0, SEC(1));

    dctx_rpc_server_stats ss = rt_server_stats(srv);
    assert_int_equal(ss.cancels_received, 1);
    assert_int_equal(ss.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    dctx_rpc_channel_stats cs = rt_channel_stats(ch);
    assert_int_equal(cs.cancels_pushed, 1);
    assert_int_equal(cs.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    assert_int_equal(cs.by_code[DCTX_CANCELED], 1);

    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* What a channel's event hook saw of CANCEL_PUSHED events. */
struct push_seen {
    atomic_int pushes;
    pthread_t thread;
    int code;
    char message[64];
};

static void record_push(void *arg, const dctx_rpc_event *ev)
{
    struct push_seen *s = arg;
    if (ev->kind == DCTX_RPC_EVENT_CANCEL_PUSHED) {
        s->thread = pthread_self();
        s->code = ev->code;
        snprintf(s->message, sizeof s->message, "%s", ev->message);
        atomic_fetch_add(&s->pushes, 1); /* orders the fields above for the test */
    }
}

/* The push is the canceling thread's own work, done inside dctx_cancel:
 * no hand-off to another thread stands between a cancel and its frame, so
 * the channel has counted it by the time dctx_cancel returns. */
static void cancel_is_pushed_by_the_canceling_thread_before_cancel_returns(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    dctx_cancel(ctx);
    /* no wait: the frame is on its way when dctx_cancel returns */
    assert_int_equal(rt_channel_stats(ch).cancels_pushed, 1);

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_CANCELED);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* An event hook is the user's code, which never runs inside dctx_cancel
 * (rpc.h, Events): CANCEL_PUSHED is reported once, from another thread,
 * with the cancel's cause. */
static void cancel_pushed_event_comes_once_from_another_thread_with_the_cause(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    static struct push_seen seen;
    memset(&seen, 0, sizeof seen);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.on_event = record_push;
    co.event_arg = &seen;
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    dctx_cancel_cause(ctx, DCTX_ABORTED, "stop now");
    assert_true(WAIT_FOR(atomic_load(&seen.pushes) == 1, SEC(5)));
    assert_false(pthread_equal(seen.thread, pthread_self()));
    assert_int_equal(seen.code, DCTX_ABORTED);
    assert_string_equal(seen.message, "stop now");

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_CANCELED);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(atomic_load(&seen.pushes), 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* dctx_rpc_handle_cancel_outcome asked right after dctx_cancel waits for
 * the cancel's answer instead of answering NONE ("no cancel was pushed"):
 * the push runs on the canceling thread inside dctx_cancel, which sets
 * the outcome word to PENDING before the frame goes (client.c,
 * context_done). Twenty rounds: a push left to another thread would lose
 * this race in some rounds and not in others. */
static void cancel_outcome_asked_right_after_the_cancel_waits_for_the_answer(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    rt_serve(RT_IPC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    enum { ROUNDS = 20 };
    int answered_none = 0;
    for (int i = 0; i < ROUNDS; i++) {
        rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10)); /* the last call's handler is done */
        dctx *ctx = rt_with_cancel();
        static rt_outcome o;
        dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
        assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
        dctx_cancel(ctx);
        int outcome = dctx_rpc_handle_cancel_outcome(h, SEC(5));
        if (outcome == DCTX_RPC_CANCEL_NONE)
            answered_none++;
        else
            assert_int_equal(outcome, DCTX_RPC_CANCEL_STOPPED);
        rt_finish(h, SEC(5));
        assert_int_equal(o.code, DCTX_CANCELED);
        /* asked again once the call has ended, the answer is there */
        assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);
        assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
        rt_handle_release(h);
        rt_ctx_release(ctx);
    }
    if (answered_none > 0)
        fail_msg("%d of %d times the outcome asked right after dctx_cancel was \"none\" "
                 "(no cancel pushed) although the handler was then stopped",
                 answered_none, ROUNDS);
}

static void cancel_crosses_two_hops_with_its_cause(void **state)
{
    (void)state;
    static rt_probe at_b;
    rt_probe_init(&at_b, RT_PROBE_WAIT_CTX, SEC(10));
    char url_a[256], url_b[256];
    rt_serve(RT_INPROC, NULL, "/it.B/Wait", rt_probe_handler, &at_b, url_b);
    static struct rt_hop a;
    memset(&a, 0, sizeof a);
    a.next_method = "/it.B/Wait";
    a.next = rt_channel_open(url_b, NULL);
    rt_serve(RT_IPC, NULL, "/it.A/Forward", rt_hop_handler, &a, url_a);
    dctx_rpc_channel *ch = rt_channel_open(url_a, NULL);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.A/Forward", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&at_b.started), SEC(5)));
    dctx_cancel_cause(ctx, DCTX_ABORTED, "stop the chain");
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_CANCELED);

    assert_true(WAIT_FOR(atomic_load(&at_b.finished), SEC(5)));
    assert_int_equal(at_b.err, DCTX_CANCELED);
    assert_int_equal(at_b.cause, DCTX_ABORTED);
    assert_string_equal(at_b.cause_msg, "stop the chain");
    assert_true(WAIT_FOR(atomic_load(&a.done), SEC(5)));
    assert_int_equal(a.onward_rc, DCTX_CANCELED);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* A Cancel for a token no call has yet leaves a tombstone: the Call that
 * comes after it is refused at once, never run. On one connection a
 * cancel cannot overtake its call (a stream is ordered): here the Cancel
 * comes on one connection and its Call on another, as when a caller's
 * connection was replaced while its cancel was on the way. The CancelAck
 * and the Reply each carry the call id of the frame they answer. */
static void cancel_that_overtakes_its_call_refuses_the_call_unrun(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_INPROC, NULL, "/it.Raw/Probe", rt_probe_handler, &p, url);
    rt_raw *first = rt_raw_open(url);
    rt_raw *second = rt_raw_open(url);

    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint32_t id = 0;
    uint8_t *buf = rt_pack_cancel(7, token, DCTX_ABORTED, "overtaking", 5000000, &len);
    rt_raw_send(first, buf, len);
    assert_int_equal(rt_raw_recv_cancel_ack(first, &id), DCTX_RPC_CANCEL_PREVENTED);
    assert_int_equal(id, 7);

    buf = rt_pack_call(9, "/it.Raw/Probe", token, 0, "x", 1, &len);
    int64_t t0 = dctx_now();
    rt_raw_send(second, buf, len);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    assert_int_equal(rt_raw_recv_reply(second, &id, msg, sizeof msg), DCTX_CANCELED);
    assert_int_equal(id, 9);
    assert_contains(msg, "canceled before it arrived");
    assert_ns_in(dctx_now() - t0, 0, SEC(1)); /* at once: nothing waited for */
    assert_int_equal(atomic_load(&p.runs), 0);

    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.cancels_received, 1);
    assert_int_equal(st.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.by_code[DCTX_CANCELED], 1);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    /* and both connections still serve calls of their own (the first
     * reuses id 7: its cancel left nothing in flight) */
    rt_token(token);
    buf = rt_pack_call(7, "/it.Raw/Probe", token, 0, "x", 1, &len);
    rt_raw_send(first, buf, len);
    assert_int_equal(rt_raw_recv_reply(first, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 7);
    rt_token(token);
    buf = rt_pack_call(9, "/it.Raw/Probe", token, 0, "x", 1, &len);
    rt_raw_send(second, buf, len);
    assert_int_equal(rt_raw_recv_reply(second, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 9);
    assert_int_equal(atomic_load(&p.runs), 2);
}

/* The server remembers finished tokens for a while, so a late Cancel (its
 * call id no longer in flight) is answered TOO_LATE rather than leaving a
 * tombstone. */
static void cancel_of_a_finished_call_is_too_late(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_INPROC, NULL, "/it.Raw/Probe", rt_probe_handler, &p, url);
    rt_raw *r = rt_raw_open(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint32_t id = 0;
    uint8_t *buf = rt_pack_call(3, "/it.Raw/Probe", token, 0, NULL, 0, &len);
    rt_raw_send(r, buf, len);
    assert_int_equal(rt_raw_recv_reply(r, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 3);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    buf = rt_pack_cancel(3, token, DCTX_CANCELED, "", 1000000, &len);
    rt_raw_send(r, buf, len);
    assert_int_equal(rt_raw_recv_cancel_ack(r, &id), DCTX_RPC_CANCEL_TOO_LATE);
    assert_int_equal(id, 3);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE], 1);
    assert_int_equal(atomic_load(&p.runs), 1);
}

/* What a raw caller read of its calls 5 and 6 (index id - 5): each
 * Reply's code and each CancelAck's outcome, -1 until it came. */
struct answers {
    int code[2], outcome[2];
    char msg[2][DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
};

/* Read frames into a until *want is no longer -1 (2 s a frame at most).
 * A frame for another id, a second answer, or another kind fails. */
static void read_answers_until(rt_raw *r, struct answers *a, const int *want)
{
    while (*want == -1) {
        Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
        if (f == NULL)
            fail_msg("nothing more in 2 s: replies %d %d, cancel_acks %d %d", a->code[0],
                     a->code[1], a->outcome[0], a->outcome[1]);
        if (f->call_id != 5 && f->call_id != 6)
            fail_msg("a %s for call %u", rt_frame_kind(f), f->call_id);
        int i = (int)f->call_id - 5;
        if (f->body_case == DCTX__WIRE__FRAME__BODY_REPLY && a->code[i] == -1) {
            a->code[i] = (int)f->reply->code;
            snprintf(a->msg[i], sizeof a->msg[i], "%s", f->reply->message ? f->reply->message : "");
        } else if (f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK && a->outcome[i] == -1) {
            a->outcome[i] = (int)f->cancel_ack->outcome;
        } else {
            fail_msg("call %u: a second %s, or one of no use", f->call_id, rt_frame_kind(f));
        }
        dctx__wire__frame__free_unpacked(f, NULL);
    }
}

/* On a session a Cancel names its call by the call id: one worker, held
 * by call 5; call 6 waits in the queue. Canceling 6 prevents it (acked
 * PREVENTED, its Reply CANCELLED, never run); canceling 5 stops its
 * handler, with the cause. Each answer carries its call's id. */
static void cancel_names_its_call_by_id_and_is_acked_with_it(void **state)
{
    (void)state;
    static rt_probe probes[2];
    rt_probe_init(&probes[0], RT_PROBE_WAIT_CTX, SEC(10));
    rt_probe_init(&probes[1], RT_PROBE_RETURN, 0);
    dctx_rpc_server_options so = rt_server_options(1);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Raw/Probes", rt_probes_handler, probes, url);
    rt_raw *r = rt_raw_open(url);

    uint8_t t5[DCTX_TOKEN_BYTES], t6[DCTX_TOKEN_BYTES];
    rt_token(t5);
    rt_token(t6);
    size_t len;
    uint8_t which = 0;
    uint8_t *buf = rt_pack_call(5, "/it.Raw/Probes", t5, 0, &which, 1, &len);
    rt_raw_send(r, buf, len);
    assert_true(WAIT_FOR(atomic_load(&probes[0].started), SEC(5)));
    which = 1;
    buf = rt_pack_call(6, "/it.Raw/Probes", t6, 0, &which, 1, &len);
    rt_raw_send(r, buf, len);
    assert_true(WAIT_FOR(rt_server_stats(srv).calls == 2, SEC(5)));

    struct answers a = {{-1, -1}, {-1, -1}, {"", ""}};
    buf = rt_pack_cancel(6, t6, DCTX_ABORTED, "not that one", 5000000, &len);
    rt_raw_send(r, buf, len);
    read_answers_until(r, &a, &a.outcome[1]);
    assert_int_equal(a.outcome[1], DCTX_RPC_CANCEL_PREVENTED);
    assert_int_equal(a.code[0], -1);

    buf = rt_pack_cancel(5, t5, DCTX_ABORTED, "nor this one", 5000000, &len);
    rt_raw_send(r, buf, len);
    read_answers_until(r, &a, &a.outcome[0]);
    assert_int_equal(a.outcome[0], DCTX_RPC_CANCEL_STOPPED);
    read_answers_until(r, &a, &a.code[0]);
    read_answers_until(r, &a, &a.code[1]);
    assert_int_equal(a.code[1], DCTX_CANCELED);
    assert_int_equal(atomic_load(&probes[1].runs), 0);
    assert_true(WAIT_FOR(atomic_load(&probes[0].finished), SEC(5)));
    assert_int_equal(probes[0].cause, DCTX_ABORTED);
    assert_string_equal(probes[0].cause_msg, "nor this one");
    assert_int_equal(a.code[0], DCTX_ABORTED); /* the handler answers with its context's cause */

    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(st.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    assert_int_equal(st.bad_frames, 0);
}

/* One worker, held by the first call: the second waits in the queue, and
 * its cancel removes it before it runs. */
static void cancel_of_a_queued_call_is_prevented_and_counted_on_both_sides(void **state)
{
    (void)state;
    static rt_probe probes[2];
    rt_probe_init(&probes[0], RT_PROBE_HOLD, SEC(10));
    rt_probe_init(&probes[1], RT_PROBE_RETURN, 0);
    dctx_rpc_server_options so = rt_server_options(1);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Queue/Probe", rt_probes_handler, probes, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    static rt_outcome o0, o1;
    uint8_t r0 = 0, r1 = 1;
    dctx_rpc_handle *h0 = rt_start(ch, NULL, "/it.Queue/Probe", &r0, 1, &o0);
    assert_true(WAIT_FOR(atomic_load(&probes[0].started), SEC(5)));
    dctx *ctx = rt_with_cancel();
    dctx_rpc_handle *h1 = rt_start(ch, ctx, "/it.Queue/Probe", &r1, 1, &o1);
    assert_true(WAIT_FOR(rt_server_stats(srv).calls == 2, SEC(5)));
    dctx_cancel(ctx);
    rt_finish(h1, SEC(5));
    assert_int_equal(o1.code, DCTX_CANCELED);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h1, SEC(5)), DCTX_RPC_CANCEL_PREVENTED);

    atomic_store(&probes[0].release, 1);
    rt_finish(h0, SEC(5));
    assert_int_equal(o0.code, DCTX_OK);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
    assert_int_equal(atomic_load(&probes[1].runs), 0);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(rt_channel_stats(ch).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    rt_handle_release(h0);
    rt_handle_release(h1);
    rt_ctx_release(ctx);
}

/* A probe server behind a relay, a channel through the relay, and a call
 * under a cancelable context whose Call frame the relay holds (c->call). */
struct relayed_call {
    rt_probe p;
    rt_outcome o;
    dctx_rpc_server *srv;
    rt_relay *r;
    dctx_rpc_channel *ch;
    dctx *ctx;
    dctx_rpc_handle *h;
    rt_frame *call;
};

static void relayed_call_start(struct relayed_call *c)
{
    memset(c, 0, sizeof *c);
    rt_probe_init(&c->p, RT_PROBE_RETURN, 0);
    char url[256];
    c->srv = rt_serve(RT_INPROC, NULL, "/it.Relay/Probe", rt_probe_handler, &c->p, url);
    c->r = rt_relay_open(url);
    c->ch = rt_channel_open(c->r->url, NULL);
    c->ctx = rt_with_cancel();
    c->h = rt_start(c->ch, c->ctx, "/it.Relay/Probe", NULL, 0, &c->o);
    c->call = rt_relay_from_channel(c->r);
    assert_non_null(c->call);
    assert_non_null(c->call->f);
    assert_int_equal(c->call->f->body_case, DCTX__WIRE__FRAME__BODY_CALL);
    assert_int_not_equal(c->call->f->call_id, 0);
}

/* Through a relay that holds the Call and lets the Cancel by first: the
 * network reordered them (on one connection a cancel never overtakes its
 * call, so the relay does it). The server sees a Cancel for a call id not
 * in flight, finds its token unknown and remembers it: PREVENTED; the Call
 * that comes after is refused CANCELLED, never run. */
static void cancel_that_reaches_the_server_before_its_call_is_prevented_on_both_sides(void **state)
{
    (void)state;
    static struct relayed_call c; /* static: the server may use it after a failed assert */
    relayed_call_start(&c);
    dctx_rpc_server *srv = c.srv;
    rt_relay *r = c.r;
    dctx_rpc_channel *ch = c.ch;
    dctx *ctx = c.ctx;
    dctx_rpc_handle *h = c.h;
    rt_frame *call = c.call;
    uint32_t id = call->f->call_id;
    dctx_cancel_cause(ctx, DCTX_ABORTED, "changed my mind");
    rt_frame *cancel = rt_relay_from_channel(r);
    assert_non_null(cancel);
    assert_non_null(cancel->f);
    assert_int_equal(cancel->f->body_case, DCTX__WIRE__FRAME__BODY_CANCEL);
    assert_int_equal(cancel->f->call_id, id);
    assert_int_equal(cancel->f->cancel->code, DCTX_ABORTED);
    assert_string_equal(cancel->f->cancel->message, "changed my mind");

    rt_relay_to_server(r, cancel);
    rt_frame *ack = rt_relay_from_server(r);
    assert_non_null(ack);
    assert_non_null(ack->f);
    assert_int_equal(ack->f->body_case, DCTX__WIRE__FRAME__BODY_CANCEL_ACK);
    assert_int_equal(ack->f->call_id, id);
    assert_int_equal(ack->f->cancel_ack->outcome, DCTX_RPC_CANCEL_PREVENTED);
    rt_relay_to_channel(r, ack);
    rt_relay_to_server(r, call); /* the call, late */
    rt_frame *reply = rt_relay_from_server(r);
    assert_non_null(reply);
    assert_non_null(reply->f);
    assert_int_equal(reply->f->body_case, DCTX__WIRE__FRAME__BODY_REPLY);
    assert_int_equal(reply->f->call_id, id);
    assert_int_equal(reply->f->reply->code, DCTX_CANCELED);
    assert_contains(reply->f->reply->message, "canceled before it arrived");
    rt_relay_to_channel(r, reply);

    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_PREVENTED);
    rt_finish(h, SEC(5));
    assert_int_equal(c.o.code, DCTX_CANCELED);
    assert_int_equal(atomic_load(&c.p.runs), 0);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(rt_server_stats(srv).bad_frames, 0);
    assert_int_equal(rt_channel_stats(ch).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* Through a relay that holds the reply: the server finished, the caller
 * cancels before the answer reaches it. The Cancel's call id is no longer
 * in flight at the server, whose finished tokens answer TOO_LATE. */
static void cancel_after_the_server_finished_is_too_late_on_both_sides(void **state)
{
    (void)state;
    static struct relayed_call c; /* static: the server may use it after a failed assert */
    relayed_call_start(&c);
    dctx_rpc_server *srv = c.srv;
    rt_relay *r = c.r;
    dctx_rpc_channel *ch = c.ch;
    dctx *ctx = c.ctx;
    dctx_rpc_handle *h = c.h;
    uint32_t id = c.call->f->call_id;
    rt_relay_to_server(r, c.call);
    rt_frame *reply = rt_relay_from_server(r);
    assert_non_null(reply);
    assert_non_null(reply->f);
    assert_int_equal(reply->f->body_case, DCTX__WIRE__FRAME__BODY_REPLY);
    assert_int_equal(reply->f->call_id, id);
    assert_int_equal(reply->f->reply->code, DCTX_OK);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    dctx_cancel_cause(ctx, DCTX_ABORTED, "too slow");
    rt_frame *cancel = rt_relay_from_channel(r);
    assert_non_null(cancel);
    assert_non_null(cancel->f);
    assert_int_equal(cancel->f->body_case, DCTX__WIRE__FRAME__BODY_CANCEL);
    assert_int_equal(cancel->f->call_id, id);
    rt_relay_to_server(r, cancel);
    rt_frame *ack = rt_relay_from_server(r);
    assert_non_null(ack);
    assert_non_null(ack->f);
    assert_int_equal(ack->f->body_case, DCTX__WIRE__FRAME__BODY_CANCEL_ACK);
    assert_int_equal(ack->f->call_id, id);
    assert_int_equal(ack->f->cancel_ack->outcome, DCTX_RPC_CANCEL_TOO_LATE);
    rt_relay_to_channel(r, ack);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_TOO_LATE);
    rt_finish(h, SEC(5));
    assert_int_equal(c.o.code, DCTX_CANCELED);
    rt_relay_to_channel(r, reply); /* the answer, after the caller gave up: dropped */

    assert_int_equal(atomic_load(&c.p.runs), 1);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE], 1);
    assert_int_equal(rt_channel_stats(ch).cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE], 1);
    assert_int_equal(atomic_load(&c.o.callbacks), 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

int main(int argc, char **argv)
{
    rt_init("rpc_cancel", RT_PORTS_CANCEL);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(cancel_cause_reaches_the_running_handler_which_reports_stopped),
        RT_TEST(cancel_is_pushed_by_the_canceling_thread_before_cancel_returns),
        RT_TEST(cancel_pushed_event_comes_once_from_another_thread_with_the_cause),
        RT_TEST(cancel_outcome_asked_right_after_the_cancel_waits_for_the_answer),
        RT_TEST(cancel_crosses_two_hops_with_its_cause),
        RT_TEST(cancel_that_overtakes_its_call_refuses_the_call_unrun),
        RT_TEST(cancel_of_a_finished_call_is_too_late),
        RT_TEST(cancel_names_its_call_by_id_and_is_acked_with_it),
        RT_TEST(cancel_of_a_queued_call_is_prevented_and_counted_on_both_sides),
        RT_TEST(cancel_that_reaches_the_server_before_its_call_is_prevented_on_both_sides),
        RT_TEST(cancel_after_the_server_finished_is_too_late_on_both_sides),
    };
    return cmocka_run_group_tests_name("rpc_cancel", tests, rt_group_setup, NULL);
}
