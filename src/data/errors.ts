/** The error of the dataset file readers (tar, gzip, IDX, CIFAR): `file` names the file, the message says what is wrong. */
export class DataFileError extends Error {
  constructor(
    readonly file: string,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`${file}: ${detail}`, options);
    this.name = 'DataFileError';
  }
}
