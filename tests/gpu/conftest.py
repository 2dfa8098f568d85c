"""GPU tests import the *built* ligerd package (installed, or <build>/python on PYTHONPATH), never
the source tree, which has no ligerd._C. The report header says which one was used."""


def pytest_report_header(config):
    try:
        import torch
        import ligerd
        from ligerd import _backend
    except Exception as e:  # noqa: BLE001
        return [f"ligerd: not importable ({e})"]
    lines = [f"ligerd {ligerd.__version__} from {ligerd.__file__}",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"devices: {torch.cuda.device_count() if torch.cuda.is_available() else 0}"]
    if torch.cuda.is_available():
        lines.append(f"device 0: {torch.cuda.get_device_name(0)}")
        lines.append("ligerd._C: " + ("loaded" if _backend.extension_available() else
                                      "NOT AVAILABLE (every op test will fail)"))
    return lines
