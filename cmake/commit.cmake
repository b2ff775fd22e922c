# Writes OUT with the current git commit (plus "-dirty" when tracked files differ from it).
# Run at every build, rewriting OUT only when the text changes, so `infllm --version` and the
# benchmark rows never carry a stale commit.
# A source tree that is not its own git checkout (a `git archive` snapshot, possibly inside
# another repository) gets its label from the environment variable INFLLM_COMMIT or from a file
# SRC/.infllm-commit (the snapshot's writer puts the commit there), else "unknown": never the
# commit of a repository that merely contains it.
set(commit "")
if(DEFINED ENV{INFLLM_COMMIT} AND NOT "$ENV{INFLLM_COMMIT}" STREQUAL "")
  set(commit "$ENV{INFLLM_COMMIT}")
elseif(EXISTS ${SRC}/.infllm-commit)
  file(STRINGS ${SRC}/.infllm-commit commit LIMIT_COUNT 1)
else()
  execute_process(COMMAND git rev-parse --show-toplevel WORKING_DIRECTORY ${SRC}
                  OUTPUT_VARIABLE top OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  get_filename_component(src_real ${SRC} REALPATH)
  if(rc EQUAL 0 AND top)
    get_filename_component(top_real ${top} REALPATH)
  else()
    set(top_real "")
  endif()
  if(top_real STREQUAL src_real)
    execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
                    OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0 AND commit)
      execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SRC}
                      OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      if(dirty)
        set(commit "${commit}-dirty")
      endif()
    else()
      set(commit "")
    endif()
  endif()
endif()
string(REGEX REPLACE "[^A-Za-z0-9._+-]" "" commit "${commit}") # it goes into a C string literal
if(NOT commit)
  set(commit "unknown")
endif()
set(text "#define INFLLM_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
