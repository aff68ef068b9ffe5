#include "textflag.h"

// A histBin is 32 bytes: g at 0, h at 8, n at 16. Bin b starts at b*32.

// func histAllSSE2(hf *featHist, col *uint8, gh *ghPair, n int)
TEXT ·histAllSSE2(SB), NOSPLIT, $0-32
	MOVQ hf+0(FP), DI
	MOVQ col+8(FP), SI
	MOVQ gh+16(FP), DX
	MOVQ n+24(FP), CX
	TESTQ CX, CX
	JLE  allDone

allLoop:
	MOVBQZX (SI), AX
	SHLQ    $5, AX
	MOVUPD  (DX), X0
	MOVUPD  (DI)(AX*1), X1
	ADDPD   X1, X0
	MOVUPD  X0, (DI)(AX*1)
	INCQ    SI
	ADDQ    $16, DX
	DECQ    CX
	JNZ     allLoop

allDone:
	RET

// func histRowsSSE2(hf *featHist, col *uint8, rows *int32, og *ghPair, n int)
TEXT ·histRowsSSE2(SB), NOSPLIT, $0-40
	MOVQ hf+0(FP), DI
	MOVQ col+8(FP), SI
	MOVQ rows+16(FP), R8
	MOVQ og+24(FP), DX
	MOVQ n+32(FP), CX
	TESTQ CX, CX
	JLE  rowsDone

rowsLoop:
	MOVLQSX (R8), BX
	MOVBQZX (SI)(BX*1), AX
	SHLQ    $5, AX
	MOVUPD  (DX), X0
	MOVUPD  (DI)(AX*1), X1
	ADDPD   X1, X0
	MOVUPD  X0, (DI)(AX*1)
	INCQ    16(DI)(AX*1)
	ADDQ    $4, R8
	ADDQ    $16, DX
	DECQ    CX
	JNZ     rowsLoop

rowsDone:
	RET
