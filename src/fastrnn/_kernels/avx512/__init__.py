"""The dispatched kernels compiled for x86-64-v4 (AVX-512 F/BW/CD/DQ/VL); see _dispatch."""
