# infllm_cuda_archs(<out> "<gpu compute capabilities>" "<nvcc's sm codes>"): the CUDA architectures a build
# configured on this machine gets when -DINFLLM_CUDA_ARCHS is not given.
#   - always sm_80 (Ampere and the cc 8.x parts, which run sm_80 code) and sm_90, with its PTX for newer GPUs;
#   - 90a instead of 90 when a compute capability 9.0 GPU is present (the Hopper wgmma kernels);
#   - the GPU's own architecture for each compute capability 10.0 or newer (Blackwell: 10.0 / 10.3 / 12.0 /
#     12.1 ...) that this nvcc can build (listed by `nvcc --list-gpu-code`), so that it runs its own SASS
#     instead of JIT-compiling the embedded PTX at each process's first CUDA call with an empty cache (24 s on
#     the H200 for the compute_80 PTX, README "GPUs").
# ccs: a list such as "9.0;12.0" (nvidia-smi --query-gpu=compute_cap, one line a GPU); codes: such as
# "sm_80;sm_90;sm_100;sm_120". tests/cuda_archs_check.cmake holds it to its cases (ctest: cmake_cuda_archs).
function(infllm_cuda_archs out ccs codes)
  set(archs 80)
  set(hopper FALSE)
  foreach(cc IN LISTS ccs)
    string(STRIP "${cc}" cc)
    if(cc STREQUAL "9.0")
      set(hopper TRUE)
    endif()
  endforeach()
  if(hopper)
    list(APPEND archs 90a)
  else()
    list(APPEND archs 90)
  endif()
  foreach(cc IN LISTS ccs)
    string(STRIP "${cc}" cc)
    if(cc MATCHES "^([0-9]+)\\.([0-9])$" AND CMAKE_MATCH_1 GREATER_EQUAL 10)
      set(a "${CMAKE_MATCH_1}${CMAKE_MATCH_2}")
      if("sm_${a}" IN_LIST codes AND NOT a IN_LIST archs)
        list(APPEND archs ${a})
      endif()
    endif()
  endforeach()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()
