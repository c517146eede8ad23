"""Epoch logs for watching long runs (Lightning's TensorBoard logger, or its CSV logger without tensorboard)."""


from mpn_nas.run_logs import TRIAL_LOG_FOLDER, trial_log_callbacks


def test_trials_log_under_nni_output_dir_only_when_nni_started_them(tmp_path, monkeypatch):
    monkeypatch.delenv("NNI_OUTPUT_DIR", raising=False)
    assert trial_log_callbacks() == []
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path))
    (callback,) = trial_log_callbacks()
    assert callback.directory == tmp_path / TRIAL_LOG_FOLDER == tmp_path / "tensorboard"  # NNI's TensorBoard button
