#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (PyPI), each module against only the tests
# that cover it, so one module takes seconds to minutes on 2 cores:
#
#   .venv/bin/pip install "mutmut>=3.3,<4"
#   bash scripts/mutation.sh                       # every module of the table below
#   bash scripts/mutation.sh edgeasc/export/fold.py
#
# Runs in a scratch copy of the tree (mutmut writes mutants/ next to the code); prints one
# Markdown row per module: mutants, killed, survived, not reached by the selected tests, and
# the score = killed / (killed + survived). `mutmut results` and `mutmut show NAME` in the
# printed folder list the survivors. Only in-process tests are selected: a CLI subprocess
# imports the installed (unmutated) package, so it could not kill anything.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MUTMUT=${MUTMUT:-$REPO/.venv/bin/mutmut}
[ -x "$MUTMUT" ] || { echo "mutation: no $MUTMUT: .venv/bin/pip install 'mutmut>=3.3,<4'" >&2; exit 2; }

declare -A TESTS=(
    [edgeasc/compress/pruning.py]='"tests/test_pruning.py"'
    [edgeasc/compress/structured.py]='"tests/test_structured.py"'
    [edgeasc/compress/fit.py]='"tests/test_fit.py::test_plan_picks_the_widest_candidate_within_the_headroom", "tests/test_fit.py::test_the_plan_says_what_it_will_do_line_for_line", "tests/test_fit.py::test_plans_that_cannot_work_say_why", "tests/test_fit_plan.py"'
    [edgeasc/export/fold.py]='"tests/test_export.py::test_folding_keeps_the_function", "tests/test_export.py::test_folding_options_keep_what_they_leave_and_still_fold_the_mask", "tests/test_promises.py::test_batchnorm_folding_is_exact_at_near_zero_variances", "tests/test_export.py::test_an_export_that_keeps_the_damping_still_folds_batchnorm", "tests/test_export.py::test_with_frontend_takes_raw_audio"'
    [edgeasc/export/sparse.py]='"tests/test_sparse.py", "tests/test_export.py::test_gap_coding_round_trips_long_gaps"'
    [edgeasc/export/report.py]='"tests/test_promises.py", "tests/test_export.py::test_budget_strings", "tests/test_export.py::test_malformed_budgets"'
    [edgeasc/compress/rules.py]='"tests/test_promises.py", "tests/test_export.py::test_budget_strings", "tests/test_export.py::test_malformed_budgets"'
    [edgeasc/train/distill.py]='"tests/test_distill.py::test_kd_loss_matches_a_hand_computation", "tests/test_distill.py::test_mixed_targets_give_the_mixup_of_the_two_kd_losses", "tests/test_distill.py::test_teacher_input_uses_the_teachers_own_normalisation", "tests/test_distill_mutants.py", "tests/test_recipe.py::test_the_winners_distillation_loss_on_fixed_logits"'
    [edgeasc/io.py]='"tests/test_io_lock.py", "tests/test_promises.py::test_a_writer_failing_midway_leaves_the_old_file_and_no_partial", "tests/test_promises.py::test_a_failing_rename_leaves_the_old_file_and_no_partial", "tests/test_promises.py::test_a_write_group_is_all_or_nothing", "tests/test_first_use.py::test_a_write_group_that_fails_while_renaming_restores_what_it_replaced", "tests/test_outputs.py", "tests/test_writers.py", "tests/test_round5_gaps.py::test_a_clashing_input_after_stdin_or_a_missing_input_is_still_refused", "tests/test_round5_gaps.py::test_stdin_is_not_a_file_named_dash", "tests/test_round5_gaps.py::test_is_within_a_symlink_loop_is_false"'
    [edgeasc/data/dcase.py]='"tests/test_dcase_layouts.py", "tests/test_datasets.py::test_official_layouts_are_detected_and_read", "tests/test_datasets.py::test_parse_clip_name", "tests/test_datasets.py::test_plain_folders_and_csv", "tests/test_datasets.py::test_bad_official_datasets", "tests/test_datasets.py::test_escaping_and_missing_paths_name_file_and_line", "tests/test_datasets.py::test_unknown_layout_and_missing_fold", "tests/test_datasets.py::test_tau2022_mobile_layout_and_train_subsets", "tests/test_datasets.py::test_symlinks_out_of_the_root_are_refused_and_inside_it_followed"'
    [edgeasc/data/synth2022.py]='"tests/test_synth2022_profile.py", "tests/test_synth2022.py::test_plan_device_split_and_locations", "tests/test_synth2022.py::test_train_subsets_are_nested_whole_recordings_with_every_scene", "tests/test_synth2022.py::test_devices_are_distinct_filters_with_their_own_noise"'
    [edgeasc/runtime/features.py]='"tests/test_features.py", "tests/test_features_logmel_gaps.py", "tests/test_logmel.py::test_the_filterbank_and_mel_scale_are_librosas", "tests/test_logmel.py::test_numpy_and_torch_match_librosa_on_a_32k_wav", "tests/test_logmel.py::test_without_scipy_numpys_fft_gives_the_same_features", "tests/test_logmel.py::test_near_silent_bands_are_exact_too", "tests/test_logmel.py::test_one_second_is_65_frames_and_the_window_is_the_short_one"'
    [edgeasc/runtime/audio.py]='"tests/test_audio.py", "tests/test_wav_bytes.py", "tests/test_stream_props.py", "tests/test_round5_gaps.py::test_fit_length_pads_in_the_inputs_dtype", "tests/test_round5_gaps.py::test_a_short_clip_without_an_impulse_response_reaches_the_torch_frontend"'
    [edgeasc/runtime/stream.py]='"tests/test_wav_bytes.py", "tests/test_stream_props.py", "tests/test_events.py::test_silent_windows_never_reach_the_model", "tests/test_events.py::test_event_options_are_checked", "tests/test_listen.py::test_shared_frames_equal_each_window_alone", "tests/test_listen.py::test_shared_frames_on_a_loud_burst_and_stereo_that_differs", "tests/test_listen.py::test_shared_frames_give_the_real_network_the_same_probabilities", "tests/test_round5_gaps.py::test_silence_db_edges_and_message", "tests/test_round5_gaps.py::test_a_library_caller_gets_silence_db_checked_too", "tests/test_round5_gaps.py::test_silent_and_classified_windows_carry_their_index_start_latency_and_level", "tests/test_round5_gaps.py::test_a_window_exactly_at_the_threshold_is_classified", "tests/test_round5_gaps.py::test_a_silent_stream_shorter_than_one_window_still_gets_its_window", "tests/test_round5_gaps.py::test_listen_transforms_each_shared_stft_frame_once", "tests/test_round5_gaps.py::test_digital_zero_and_nothing_are_the_floor_without_a_numpy_warning"'
    [edgeasc/runtime/metadata.py]='"tests/test_metadata.py", "tests/test_metadata_bounds.py", "tests/test_integrity.py::test_parse_metadata_names_the_first_empty_band", "tests/test_integrity.py::test_the_empty_band_check_is_the_filterbank", "tests/test_integrity.py::test_the_conv_plan_is_written_and_matches_the_graph", "tests/test_integrity.py::test_a_plan_that_disagrees_with_the_graph_is_refused", "tests/test_integrity.py::test_a_fixed_time_axis_must_take_one_clip", "tests/test_integrity.py::test_a_filterbank_with_an_empty_band_is_refused_at_load_and_at_export", "tests/test_logmel.py::test_parameters_travel_and_old_metadata_is_perceptual", "tests/test_logmel.py::test_unbuildable_frontends_are_refused_in_one_line", "tests/test_outputs.py::test_export_refuses_bad_feature_parameters_in_one_line"'
    [edgeasc/runtime/onnx_proto.py]='"tests/test_onnx_proto_wire.py", "tests/test_integrity.py::test_malformed_bytes_say_where", "tests/test_integrity.py::test_the_reader_agrees_with_the_onnx_package", "tests/test_integrity.py::test_malformed_bytes_only_ever_raise_proto_error", "tests/test_integrity.py::test_a_flipped_bit_in_the_pack_is_refused", "tests/test_integrity.py::test_a_pack_without_its_checksum_is_refused", "tests/test_integrity.py::test_the_conv_plan_is_written_and_matches_the_graph", "tests/test_integrity.py::test_a_plan_that_disagrees_with_the_graph_is_refused", "tests/test_integrity.py::test_a_fixed_time_axis_must_take_one_clip", "tests/test_export.py::test_an_export_that_keeps_the_damping_still_folds_batchnorm"'
    [edgeasc/runtime/predict.py]='"tests/test_predict.py", "tests/test_promises.py::test_a_files_probabilities_are_the_linear_mean_of_its_windows", "tests/test_runtime.py::test_window_starts_cover_the_recording_without_padding"'
    [edgeasc/runtime/windows.py]='"tests/test_predict.py", "tests/test_runtime.py::test_window_starts_cover_the_recording_without_padding", "tests/test_first_use.py"'
    [edgeasc/runtime/scores.py]='"tests/test_recipe.py::test_scores_on_a_hand_made_confusion", "tests/test_round4_mutants.py"'
    [edgeasc/runtime/events.py]='"tests/test_events.py::test_a_scene_is_reported_after_hold_confident_windows_and_spikes_are_not", "tests/test_events.py::test_time_before_the_first_scene_is_undecided_and_hold_one_reports_every_change", "tests/test_round4_mutants.py"'
    [edgeasc/runtime/stats.py]='"tests/test_events.py::test_the_latency_histogram_is_within_its_stated_error_of_the_exact_quantiles", "tests/test_events.py::test_window_statistics_do_not_grow_with_the_number_of_windows", "tests/test_round4_mutants.py"'
    [edgeasc/data/impulse.py]='"tests/test_impulse.py"'
    [edgeasc/models/cp_mobile_config.py]='"tests/test_cp_mobile.py::test_the_preset_is_the_organisers_baseline_row_by_row", "tests/test_cp_mobile.py::test_widths_follow_the_baseline_rounding", "tests/test_cp_mobile.py::test_counts_equal_torchinfo_and_the_modules", "tests/test_cp_mobile.py::test_modules_keep_the_organisers_names_and_shortcuts", "tests/test_cp_mobile.py::test_config_round_trips_with_its_family_and_refuses_nonsense", "tests/test_cp_mobile.py::test_a_trained_model_counts_its_nonzeros", "tests/test_cp_mobile.py::test_info_prints_the_table_and_refuses_cp_resnet_flags", "tests/test_cp_mobile.py::test_folding_batchnorm_keeps_the_function", "tests/test_cp_mobile.py::test_size_report_leaves_batchnorm_out_of_conv_rows_when_rules_say_so", "tests/test_cp_mobile.py::test_channel_groups_match_torch_pruning_dependency_groups", "tests/test_cp_mobile.py::test_channel_pruning_rebuilds_a_smaller_cp_mobile_with_the_masked_logits", "tests/test_cp_mobile.py::test_the_preset_brings_its_frontend_unless_one_is_named"'
    [edgeasc/runtime/recording.py]='"tests/test_predict.py", "tests/test_predict_stream.py", "tests/test_listen.py::test_streamed_windows_equal_the_whole_file_path_across_block_seams"'
)
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=(edgeasc/compress/pruning.py edgeasc/compress/structured.py edgeasc/compress/fit.py
                                     edgeasc/export/fold.py edgeasc/export/sparse.py edgeasc/export/report.py
                                     edgeasc/train/distill.py edgeasc/runtime/features.py edgeasc/runtime/predict.py
                                     edgeasc/runtime/windows.py edgeasc/runtime/recording.py
                                     edgeasc/compress/rules.py edgeasc/runtime/audio.py edgeasc/runtime/stream.py
                                     edgeasc/runtime/metadata.py edgeasc/runtime/onnx_proto.py
                                     edgeasc/io.py edgeasc/data/dcase.py edgeasc/data/synth2022.py)
echo "| module | mutants | killed | survived | not reached | score |"
echo "|---|---:|---:|---:|---:|---:|"
for module in "${MODULES[@]}"; do
    [ -n "${TESTS[$module]:-}" ] || { echo "mutation: no test selection for $module" >&2; exit 2; }
    work=$(mktemp -d "${TMPDIR:-/tmp}/edgeasc-mutation.XXXXXX")
    git ls-files -z | xargs -0 cp --parents -t "$work"
    cat >> "$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["$module"]
pytest_add_cli_args_test_selection = [${TESTS[$module]}]
also_copy = ["tests/", "edgeasc/"]
EOF
    # one OpenMP thread: torch's thread pool does not survive mutmut's fork, and a worker that
    # deadlocks on it was reported as a timeout, not as the kill it is
    (cd "$work" && OMP_NUM_THREADS=1 "$MUTMUT" run >/dev/null 2>&1) || true
    counts=$(cd "$work" && "$MUTMUT" results --all true 2>/dev/null | awk -F': ' '{print $2}' | sort | uniq -c)
    n() { echo "$counts" | awk -v s="$1" '$0 ~ s {print $1}' | head -1; }
    killed=$(n killed); timeout=$(n timeout); survived=$(n survived); none=$(n "no tests")
    killed=$((${killed:-0} + ${timeout:-0})); survived=${survived:-0}; none=${none:-0}  # a hang is detected too
    total=$((killed + survived + none))
    score=$([ $((killed + survived)) -gt 0 ] && awk -v k="$killed" -v s="$survived" 'BEGIN {printf "%.0f %%", 100 * k / (k + s)}' || echo "-")
    echo "| $module | $total | $killed | $survived | $none | $score |"
    echo "mutation: $module: survivors listed by 'cd $work && $MUTMUT results'" >&2
done
