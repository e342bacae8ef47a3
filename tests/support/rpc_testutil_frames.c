/*
 * rpc_testutil_frames.c - raw dctx frames over raw nng sockets, and the
 * relay that holds frames between a channel and a server (rpc_testutil.h).
 */
#include "rpc_testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

/* ===== Raw frames ===== */

void rt_token(uint8_t token[DCTX_TOKEN_BYTES])
{
    if (getrandom(token, DCTX_TOKEN_BYTES, 0) != DCTX_TOKEN_BYTES)
        fail_msg("getrandom failed");
}

uint8_t *rt_pack(const Dctx__Wire__Frame *f, size_t *len)
{
    *len = dctx__wire__frame__get_packed_size(f);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(dctx__wire__frame__pack(f, buf), *len);
    return buf;
}

uint8_t *rt_pack_call(const char *method, const uint8_t token[DCTX_TOKEN_BYTES], uint64_t budget_us,
                      const void *payload, size_t payload_len, size_t *len)
{
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_cancel_token = 1;
    h.cancel_token.data = (uint8_t *)token;
    h.cancel_token.len = DCTX_TOKEN_BYTES;
    h.has_budget_us = budget_us != 0;
    h.budget_us = budget_us;
    h.has_hops = 1;
    h.hops = 0;
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.method = (char *)method;
    c.context = &h;
    c.has_payload = 1;
    c.payload.data = (uint8_t *)payload;
    c.payload.len = payload_len;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_cancel(const uint8_t token[DCTX_TOKEN_BYTES], int code, const char *msg,
                        uint64_t budget_us, size_t *len)
{
    Dctx__Wire__Cancel c = DCTX__WIRE__CANCEL__INIT;
    c.has_cancel_token = 1;
    c.cancel_token.data = (uint8_t *)token;
    c.cancel_token.len = DCTX_TOKEN_BYTES;
    c.has_code = 1;
    c.code = (uint32_t)code;
    c.message = (char *)msg;
    c.has_budget_us = 1;
    c.budget_us = budget_us;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CANCEL;
    f.cancel = &c;
    return rt_pack(&f, len);
}

nng_socket rt_raw_req(const char *url)
{
    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    rt_track_sock(s);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 2000), 0);
    int rv;
    int64_t until = dctx_now() + SEC(5);
    while ((rv = nng_dial(s, url, NULL, 0)) != 0 && dctx_now() < until)
        rt_sleep(MS(5));
    assert_int_equal(rv, 0);
    return s;
}

void rt_send_bytes(nng_socket s, uint8_t *buf, size_t len)
{
    assert_int_equal(nng_send(s, buf, len, 0), 0);
    free(buf);
}

Dctx__Wire__Frame *rt_recv_frame(nng_socket s)
{
    void *buf = NULL;
    size_t len = 0;
    if (nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) != 0)
        return NULL;
    Dctx__Wire__Frame *f = dctx__wire__frame__unpack(NULL, len, buf);
    nng_free(buf, len);
    return f;
}

int rt_recv_reply(nng_socket s, char *msg, size_t msg_len)
{
    Dctx__Wire__Frame *f = rt_recv_frame(s);
    int code = -1;
    if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_REPLY && f->reply->has_code) {
        code = (int)f->reply->code;
        if (msg != NULL)
            snprintf(msg, msg_len, "%s", f->reply->message ? f->reply->message : "");
    }
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return code;
}

int rt_recv_cancel_ack(nng_socket s)
{
    Dctx__Wire__Frame *f = rt_recv_frame(s);
    int outcome = -1;
    if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK &&
        f->cancel_ack->has_outcome)
        outcome = (int)f->cancel_ack->outcome;
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return outcome;
}

Dctx__Wire__Frame *rt_msg_frame(nng_msg *m)
{
    return dctx__wire__frame__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
}

int rt_msg_reply_code(nng_msg *m)
{
    Dctx__Wire__Frame *f = rt_msg_frame(m);
    int code =
        f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_REPLY ? (int)f->reply->code : -1;
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return code;
}

int rt_msg_ack_outcome(nng_msg *m)
{
    Dctx__Wire__Frame *f = rt_msg_frame(m);
    int o = f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK
                ? (int)f->cancel_ack->outcome
                : -1;
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return o;
}

/* ===== The relay ===== */

rt_relay *rt_relay_open(const char *server_url)
{
    rt_relay *r = calloc(1, sizeof *r);
    assert_non_null(r);
    assert_int_equal(nng_rep0_open(&r->front), 0);
    assert_int_equal(nng_req0_open(&r->back), 0);
    rt_track_relay(r);
    assert_int_equal(nng_socket_set_ms(r->back, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(nng_ctx_open(&r->fctx[i], r->front), 0);
        assert_int_equal(nng_ctx_open(&r->bctx[i], r->back), 0);
        assert_int_equal(nng_aio_alloc(&r->faio[i], NULL, NULL), 0);
        assert_int_equal(nng_aio_alloc(&r->baio[i], NULL, NULL), 0);
        nng_aio_set_timeout(r->faio[i], 5000);
        nng_aio_set_timeout(r->baio[i], 5000);
    }
    rt_url(RT_INPROC, r->url, sizeof r->url);
    assert_int_equal(nng_listen(r->front, r->url, NULL, 0), 0);
    assert_int_equal(nng_dial(r->back, server_url, NULL, 0), 0);
    return r;
}

void rt_relay_close(rt_relay *r)
{
    rt_untrack_relay(r);
    nng_close(r->front);
    nng_close(r->back);
    for (int i = 0; i < 2; i++) {
        nng_aio_free(r->faio[i]);
        nng_aio_free(r->baio[i]);
    }
    free(r);
}

nng_msg *rt_relay_take(rt_relay *r, int i)
{
    nng_ctx_recv(r->fctx[i], r->faio[i]);
    nng_aio_wait(r->faio[i]);
    if (nng_aio_result(r->faio[i]) != 0)
        return NULL;
    return nng_aio_get_msg(r->faio[i]);
}

nng_msg *rt_relay_forward(rt_relay *r, int j, nng_msg *msg)
{
    nng_aio_set_msg(r->baio[j], msg);
    nng_ctx_send(r->bctx[j], r->baio[j]);
    nng_aio_wait(r->baio[j]);
    if (nng_aio_result(r->baio[j]) != 0) {
        nng_msg_free(msg);
        return NULL;
    }
    nng_ctx_recv(r->bctx[j], r->baio[j]);
    nng_aio_wait(r->baio[j]);
    if (nng_aio_result(r->baio[j]) != 0)
        return NULL;
    return nng_aio_get_msg(r->baio[j]);
}

void rt_relay_answer(rt_relay *r, int i, nng_msg *msg)
{
    nng_aio_set_msg(r->faio[i], msg);
    nng_ctx_send(r->fctx[i], r->faio[i]);
    nng_aio_wait(r->faio[i]);
    if (nng_aio_result(r->faio[i]) != 0)
        nng_msg_free(msg);
}
