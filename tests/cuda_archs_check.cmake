cmake_minimum_required(VERSION 3.20)
# cmake -P tests/cuda_archs_check.cmake: infllm_cuda_archs (cmake/cuda_archs.cmake), the default CUDA
# architectures for the GPUs a machine reports and the codes its nvcc lists.
include(${CMAKE_CURRENT_LIST_DIR}/../cmake/cuda_archs.cmake)
set(nvcc13 "sm_75;sm_80;sm_86;sm_87;sm_88;sm_89;sm_90;sm_100;sm_103;sm_110;sm_120;sm_121")
set(nvcc124 "sm_50;sm_52;sm_53;sm_60;sm_61;sm_62;sm_70;sm_72;sm_75;sm_80;sm_86;sm_87;sm_89;sm_90")
set(failed 0)
function(expect ccs codes want)
  infllm_cuda_archs(got "${ccs}" "${codes}")
  if(NOT got STREQUAL want)
    message(SEND_ERROR "infllm_cuda_archs(\"${ccs}\"): got \"${got}\", want \"${want}\"")
  else()
    message(STATUS "ok   \"${ccs}\" -> ${got}")
  endif()
endfunction()
expect("" "${nvcc13}" "80;90")                      # no GPU (CI)
expect("8.0" "${nvcc13}" "80;90")                   # A100: sm_80 SASS
expect("8.6;8.9" "${nvcc13}" "80;90")               # RTX 30 / 40 run sm_80 code
expect("9.0" "${nvcc13}" "80;90a")                  # H100 / H200: the wgmma kernels
expect("9.0;9.0" "${nvcc13}" "80;90a")
expect("10.0" "${nvcc13}" "80;90;100")              # B200
expect("12.0" "${nvcc13}" "80;90;120")              # RTX 50
expect(" 12.0 " "${nvcc13}" "80;90;120")            # nvidia-smi's spacing
expect("12.1" "${nvcc13}" "80;90;121")              # GB10
expect("9.0;10.0;10.0" "${nvcc13}" "80;90a;100")    # mixed machine, one arch per capability
expect("12.0" "${nvcc124}" "80;90")                 # an nvcc without sm_120: the PTX route
expect("13.0" "${nvcc13}" "80;90")                  # a capability this nvcc does not know
expect("garbage;7.5" "${nvcc13}" "80;90")           # unparsable lines, older GPUs: nothing added
