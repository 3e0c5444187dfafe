#include "pay_logic.h"
#include "bnb_plugin_util.h"

#include <stdio.h>
#include <string.h>

const char *pay_card_number(const json_t *card)
{
    return bnb_util_card_number(card);
}

int pay_card_valid(const char *number)
{
    return bnb_util_card_valid(number);
}

const char *pay_decide(const char *number)
{
    if (!pay_card_valid(number))
        return "DECLINED";
    size_t n = strlen(number);
    return strcmp(number + n - 4, "0002") ? "APPROVED" : "DECLINED";
}

void pay_last4(const char *number, char out[5])
{
    out[0] = '\0';
    if (pay_card_valid(number))
        memcpy(out, number + strlen(number) - 4, 5);
}

int pay_id_for(const char *reservation_id, char *out, size_t len)
{
    int n = snprintf(out, len, PAY_ID_PREFIX "%s", reservation_id ? reservation_id : "");
    return n < 0 || (size_t)n >= len || !reservation_id || !*reservation_id ? -1 : 0;
}

const char *pay_reservation_of(const char *id)
{
    size_t p = strlen(PAY_ID_PREFIX);
    if (id && !strncmp(id, PAY_ID_PREFIX, p))
        return id + p;
    return id;
}

const char *pay_refund_next(const char *status)
{
    return status && !strcmp(status, "APPROVED") ? "CANCELLED" : NULL;
}
