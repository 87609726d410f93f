/* Included into every C file of the SQLite and CPython built for the executable (gcc -include).
 * glibc 2.29 gave these libm functions new, faster versions; bullseye's headers bind calls to
 * them, which would make the result need glibc 2.29. Bind them to the versions every x86-64
 * glibc has (2.2.5), so the executable runs on glibc 2.28 (RHEL 8). */
__asm__(".symver exp,exp@GLIBC_2.2.5");
__asm__(".symver exp2,exp2@GLIBC_2.2.5");
__asm__(".symver log,log@GLIBC_2.2.5");
__asm__(".symver log2,log2@GLIBC_2.2.5");
__asm__(".symver pow,pow@GLIBC_2.2.5");
