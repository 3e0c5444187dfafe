#include "pay_logic.h"

#include <stdio.h>
#include <string.h>

const char *pay_card_number(const json_t *card)
{
    if (json_is_string(card))
        return json_string_value(card);
    if (json_is_object(card))
        return json_string_value(json_object_get(card, "number"));
    return NULL;
}

int pay_card_valid(const char *number)
{
    if (!number)
        return 0;
    size_t n = strlen(number);
    if (n < 12 || n > 19)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (number[i] < '0' || number[i] > '9')
            return 0;
    return 1;
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
