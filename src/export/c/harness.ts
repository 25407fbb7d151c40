/**
 * C sources of the programs that run generated models: a host program (stdin images, stdout
 * logits) and a bare-metal Cortex-M4 program for QEMU's mps2-an386 board (vector table, startup,
 * linker script; images read and results written through Arm semihosting).
 *
 * The Cortex-M4 program measures, per image, the SysTick ticks of tq_infer (SysTick counts the
 * processor clock, 25 MHz on mps2-an386; under `-icount shift=0` QEMU advances virtual time 1 ns
 * per instruction, so one tick is 40 instructions: the program also times a loop of a known
 * instruction count so the ratio is measured, not assumed) and the stack high-water mark (the
 * stack is painted with a pattern before each inference; the lowest overwritten word is the
 * deepest the stack went).
 */

/** Host program: reads whole images from stdin, prints "class logit0 logit1 ..." per image. */
export const HOST_MAIN = String.raw`#include <stdio.h>
#include "model.h"

int main(void)
{
    static uint8_t image[TQ_IMAGE_BYTES];
    int32_t logits[TQ_CLASSES];
    size_t got;
    int i;
    while ((got = fread(image, 1, sizeof image, stdin)) == sizeof image) {
        printf("%d", tq_infer(image, logits));
        for (i = 0; i < TQ_CLASSES; ++i) printf(" %ld", (long)logits[i]);
        printf("\n");
    }
    if (got != 0) {
        fprintf(stderr, "stdin ends inside an image (%lu of %d bytes)\n", (unsigned long)got, TQ_IMAGE_BYTES);
        return 1;
    }
    return 0;
}
`;

/** Instructions in the calibration loop (two per iteration: subs, bne). */
export const CALIBRATION_INSTRUCTIONS = 2_000_000;

/**
 * Cortex-M4 program. Reads `images.bin` (whole images) through semihosting, prints one line per
 * image: "image N class K ticks T stack S total-stack U logits L0 L1 ...", then
 * "calibration ticks T instructions I" and exits with status 0 (1 on a semihosting failure or a fault).
 */
export const DEVICE_MAIN = String.raw`#include <stdint.h>
#include "model.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RANGE 0x1000000u
#define PAINT 0xA5A5A5A5u

static int32_t semihost(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void say(const char *s) { semihost(0x04, s); }

static void say_int(int32_t v)
{
    char b[12];
    int i = 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    if (v < 0) b[--i] = '-';
    say(b + i);
}

static void finish(int status)
{
    semihost(0x18, (const void *)(status == 0 ? 0x20026u : 0x20023u)); /* ApplicationExit / RunTimeErrorUnknown */
    for (;;) {
    }
}

static volatile uint32_t systick_wraps;

void systick_handler(void) { ++systick_wraps; }

/* Processor clock ticks since the SysTick started (wraps of the 24-bit counter counted). */
static uint64_t ticks(void)
{
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * SYST_RANGE + (SYST_RANGE - 1u - value);
}

static uint32_t *stack_pointer(void)
{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* volatile: a loop the compiler turned into a memset call would paint over memset's own frame. */
static void paint_stack(void)
{
    volatile uint32_t *p;
    uint32_t *sp = stack_pointer();
    for (p = __stack_limit; p < sp; ++p) *p = PAINT;
}

static uint32_t *stack_low_water(void)
{
    uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == PAINT) ++p;
    return p;
}

static void spin(uint32_t n) { __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc"); }

int main(void)
{
    static uint8_t image[TQ_IMAGE_BYTES];
    int32_t logits[TQ_CLASSES];
    uint32_t open_args[3], read_args[3];
    int32_t handle, length, n, i;
    uint64_t t0;
    static const char name[] = "images.bin";
    open_args[0] = (uint32_t)name;
    open_args[1] = 1; /* "rb" */
    open_args[2] = sizeof name - 1;
    handle = semihost(0x01, open_args);
    if (handle < 0) return 1;
    length = semihost(0x0C, &handle);
    SYST_RVR = SYST_RANGE - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7; /* processor clock, interrupt, enable */
    for (n = 0; (n + 1) * TQ_IMAGE_BYTES <= length; ++n) {
        uint32_t *sp;
        int32_t top;
        uint64_t spent;
        read_args[0] = (uint32_t)handle;
        read_args[1] = (uint32_t)image;
        read_args[2] = TQ_IMAGE_BYTES;
        if (semihost(0x06, read_args) != 0) return 1;
        paint_stack();
        sp = stack_pointer();
        t0 = ticks();
        top = tq_infer(image, logits);
        spent = ticks() - t0;
        say("image "); say_int(n);
        say(" class "); say_int(top);
        say(" ticks "); say_int((int32_t)spent);
        say(" stack "); say_int((int32_t)((uint8_t *)sp - (uint8_t *)stack_low_water()));
        say(" total-stack "); say_int((int32_t)((uint8_t *)__stack_top - (uint8_t *)stack_low_water()));
        say(" logits");
        for (i = 0; i < TQ_CLASSES; ++i) {
            say(" ");
            say_int(logits[i]);
        }
        say("\n");
    }
    t0 = ticks();
    spin(${CALIBRATION_INSTRUCTIONS / 2});
    say("calibration ticks "); say_int((int32_t)(ticks() - t0));
    say(" instructions "); say_int(${CALIBRATION_INSTRUCTIONS});
    say("\n");
    return 0;
}

void reset_handler(void)
{
    uint32_t *s, *d;
    for (s = __data_load, d = __data_start; d < __data_end;) *d++ = *s++;
    for (d = __bss_start; d < __bss_end;) *d++ = 0;
    finish(main());
}

static void halt(void) { finish(1); }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, reset_handler, halt, halt, halt, halt, halt, 0, 0, 0, 0, halt, halt, 0, halt, systick_handler,
};
`;

/**
 * A linker script for mps2-an386: code at 0x0, SRAM at 0x20000000, sized as the target device (1 MB
 * flash, 256 KB SRAM). `text` and `flash` add to the code and the read-only sections, `bss` names
 * the symbols around .bss and `tail` adds lines before the stack top.
 */
function mps2LinkerScript(o: { text: string; flash: readonly string[]; bss: readonly [string, string]; tail: readonly string[] }): string {
  const lines = [
    '.text : { KEEP(*(.vectors)) *(.text*)' + o.text + ' } > FLASH',
    '.rodata : { *(.rodata*) . = ALIGN(4); } > FLASH',
    '.ARM.exidx : { *(.ARM.exidx*) } > FLASH',
    ...o.flash,
    '__data_load = LOADADDR(.data);',
    '.data : { __data_start = .; *(.data*) . = ALIGN(4); __data_end = .; } > RAM AT > FLASH',
    `.bss (NOLOAD) : { ${o.bss[0]} = .; *(.bss*) *(COMMON) . = ALIGN(4); ${o.bss[1]} = .; } > RAM`,
    ...o.tail,
    '__stack_top = ORIGIN(RAM) + LENGTH(RAM);',
  ];
  return `MEMORY
{
    FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 1024K
    RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 256K
}
ENTRY(reset_handler)
SECTIONS
{
${lines.map((l) => `    ${l}`).join('\n')}
}
`;
}

/** The device harness's memory map; the stack grows down to the end of .bss. */
export const DEVICE_LINKER_SCRIPT = mps2LinkerScript({ text: '', flash: [], bss: ['__bss_start', '__bss_end'], tail: ['__stack_limit = __bss_end;'] });

/**
 * Startup for an ordinary C program (`int main(int argc, char **argv)` with stdio) on mps2-an386:
 * copies .data, clears .bss, opens newlib's semihosting stdio (librdimon: link with
 * EXAMPLE_LINK_FLAGS) and exits through semihosting with main's status. The generated example
 * (project.ts) runs on it as it would in a firmware whose printf is retargeted.
 */
export const EXAMPLE_STARTUP = String.raw`#include <stdlib.h>

extern unsigned int __data_load[], __data_start[], __data_end[], __bss_start__[], __bss_end__[], __stack_top[];
extern void initialise_monitor_handles(void);
extern int main(int argc, char **argv);

void reset_handler(void)
{
    static char name[] = "example";
    static char *argv[] = { name, 0 };
    unsigned int *s, *d;
    for (s = __data_load, d = __data_start; d < __data_end;) *d++ = *s++;
    for (d = __bss_start__; d < __bss_end__;) *d++ = 0;
    initialise_monitor_handles();
    exit(main(1, argv));
}

static void halt(void) { exit(1); }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, reset_handler, halt, halt, halt, halt, halt, 0, 0, 0, 0, halt, halt, 0, halt, halt,
};
`;

/** The memory map of DEVICE_LINKER_SCRIPT plus what newlib's startup-free C library expects (heap end, init arrays). */
export const EXAMPLE_LINKER_SCRIPT = mps2LinkerScript({
  text: ' KEEP(*(.init)) KEEP(*(.fini))',
  flash: [
    '.init_array : { __preinit_array_start = .; __preinit_array_end = .; __init_array_start = .; KEEP(*(.init_array*)) __init_array_end = .; } > FLASH',
    '.fini_array : { __fini_array_start = .; KEEP(*(.fini_array*)) __fini_array_end = .; } > FLASH',
  ],
  bss: ['__bss_start__', '__bss_end__'],
  tail: ['end = .;', '__end__ = .;'],
});

/** Link flags for a program on EXAMPLE_STARTUP and EXAMPLE_LINKER_SCRIPT (link.ld): newlib nano with semihosting stdio. */
export const EXAMPLE_LINK_FLAGS = ['-nostartfiles', '--specs=nano.specs', '--specs=rdimon.specs', '-T', 'link.ld', '-Wl,--gc-sections'];
