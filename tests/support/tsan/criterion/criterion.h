/*
 * criterion.h -- a stand-in for the small part of Criterion's API the
 * concurrency tests use, for ThreadSanitizer builds only.
 *
 * Criterion cannot start under ThreadSanitizer (its sandboxing runtime fails
 * with "Could not initialize inheritable arena"), so `make tsan` compiles the
 * same test sources against this header instead: Test() registers a function
 * at load time, main() runs each registered test in turn in this process, and
 * the cr_assert macros print the failure and exit non-zero.  It prints the
 * same closing line as Criterion so CI can read the count.
 */
#ifndef SHALE_TSAN_CRITERION_H
#define SHALE_TSAN_CRITERION_H

#include <stdio.h>
#include <stdlib.h>

struct tsan_test {
    const char *suite, *name;
    void (*fn)(void);
    void (*init)(void), (*fini)(void);
    double timeout;
    struct tsan_test *next;
};
extern struct tsan_test *tsan_tests;

#define TSAN_CAT2(a, b) a##b
#define TSAN_CAT(a, b) TSAN_CAT2(a, b)
#define Test(suite, name, ...)                                                                     \
    static void suite##_##name(void);                                                              \
    __attribute__((constructor)) static void TSAN_CAT(reg_, suite##_##name)(void)                 \
    {                                                                                              \
        static struct tsan_test t = {#suite, #name, suite##_##name, __VA_ARGS__};                  \
        t.next = tsan_tests;                                                                       \
        tsan_tests = &t;                                                                           \
    }                                                                                              \
    static void suite##_##name(void)

#define cr_assert(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b))
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b))
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b))
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b))
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b))
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b))
#define cr_assert_null(a, ...) cr_assert((a) == NULL)
#define cr_assert_not_null(a, ...) cr_assert((a) != NULL)
#define cr_log_info(...) fprintf(stderr, __VA_ARGS__)

#endif
