/*
 * main.c -- runs the tests registered through the ThreadSanitizer stand-in
 * for Criterion (criterion/criterion.h beside this file), in this process.
 */
#include <stdio.h>

#include "criterion/criterion.h"

struct tsan_test *tsan_tests;

int main(void)
{
    int n = 0;
    for (struct tsan_test *t = tsan_tests; t; t = t->next, n++) {
        fprintf(stderr, "[RUN ] %s::%s\n", t->suite, t->name);
        if (t->init)
            t->init();
        t->fn();
        if (t->fini)
            t->fini();
        fprintf(stderr, "[PASS] %s::%s\n", t->suite, t->name);
    }
    /* A failing assertion exits before this line. */
    printf("%d passed, 0 failed\n", n);
    return 0;
}
