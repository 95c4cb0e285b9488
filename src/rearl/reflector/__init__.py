"""The reflection model: its prompt and label reader (`prompt`), teacher labels and SFT examples
(`labels`), fine-tuning (`train`), scoring in windows (`window`) and the quality report (`evaluate`)."""
