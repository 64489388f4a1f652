/*
 * The pixel size a mosaic file records, read in the browser for the cost estimate before any job: OME-XML
 * PhysicalSizeX, else TIFF X/YResolution (per inch or cm), else PNG's pHYs chunk (per metre), or DICOM's
 * first Pixel Spacing (0028,0030) in mm (the shared Pixel Measures functional group comes first). Like the
 * service (worker/io/resolution.py) it gives null when the size is missing, not square or implausible. The
 * service reads the file again for the job, and the result's summary says which pixel size it used.
 */

const PLAUSIBLE_UM = [0.05, 20];
const UM_PER_UNIT = { 2: 25400, 3: 10000 }; // TIFF ResolutionUnit: inch, centimetre
const OME_SIZE = /PhysicalSizeX="([0-9.eE+-]+)"(?:[^>]*?PhysicalSizeXUnit="([^"]+)")?/;
const OME_UNITS_UM = { "µm": 1, um: 1, nm: 1e-3, mm: 1e3 };
const DESCRIPTION_MAX = 1 << 20;
const PNG_HEAD = 1 << 16;
const DICOM_HEAD = 1 << 20; // attributes before the pixel data: the functional groups are there

async function bytes(file, offset, length) {
  return new DataView(await file.slice(offset, offset + length).arrayBuffer());
}

/** µm per pixel of the file, or null. */
export async function recordedPixelSizeUm(file) {
  try {
    const head = await bytes(file, 0, 8);
    const tiff = head.byteLength >= 8 && (head.getUint16(0) === 0x4949 || head.getUint16(0) === 0x4d4d);
    const png = head.byteLength >= 8 && head.getUint32(0) === 0x89504e47 && head.getUint32(4) === 0x0d0a1a0a;
    const size = tiff ? await tiffPixelSize(file, head) : png ? await pngPixelSize(file)
      : await dicomPixelSize(file);
    return size !== null && size >= PLAUSIBLE_UM[0] && size <= PLAUSIBLE_UM[1] ? size : null;
  } catch (_error) {
    return null; // unreadable here: the service will say what it reads
  }
}

async function tiffPixelSize(file, head) {
  const le = head.getUint16(0) === 0x4949;
  if (head.getUint16(2, le) !== 42) return null; // BigTIFF and others: left to the service
  const ifd = head.getUint32(4, le);
  const count = (await bytes(file, ifd, 2)).getUint16(0, le);
  const entries = await bytes(file, ifd + 2, count * 12);
  const tags = new Map();
  for (let i = 0; i < count; i++) tags.set(entries.getUint16(i * 12, le), i * 12);
  const offsetOf = (tag) => entries.getUint32(tags.get(tag) + 8, le);
  const rational = async (tag) => {
    if (!tags.has(tag) || entries.getUint16(tags.get(tag) + 2, le) !== 5) return null;
    const value = await bytes(file, offsetOf(tag), 8);
    const den = value.getUint32(4, le);
    return den ? value.getUint32(0, le) / den : null;
  };
  if (tags.has(270)) {
    const length = Math.min(entries.getUint32(tags.get(270) + 4, le), DESCRIPTION_MAX);
    const at = length <= 4 ? ifd + 2 + tags.get(270) + 8 : offsetOf(270);
    const text = new TextDecoder().decode(await file.slice(at, at + length).arrayBuffer());
    const match = OME_SIZE.exec(text);
    if (match && (match[2] || "µm") in OME_UNITS_UM) return Number(match[1]) * OME_UNITS_UM[match[2] || "µm"];
  }
  const [x, y] = [await rational(282), await rational(283)];
  const unit = tags.has(296) ? entries.getUint16(tags.get(296) + 8, le) : 2;
  if (!(x > 0 && y > 0) || Math.abs(x - y) > 1e-3 * x || !UM_PER_UNIT[unit]) return null;
  return UM_PER_UNIT[unit] / x;
}

async function pngPixelSize(file) {
  const data = await bytes(file, 0, PNG_HEAD);
  for (let at = 8; at + 8 <= data.byteLength; ) {
    const length = data.getUint32(at);
    const type = String.fromCharCode(...[4, 5, 6, 7].map((i) => data.getUint8(at + i)));
    if (type === "IDAT" || type === "IEND") return null; // pHYs comes before the image data
    if (type === "pHYs" && at + 17 <= data.byteLength) {
      const [x, y, unit] = [data.getUint32(at + 8), data.getUint32(at + 12), data.getUint8(at + 16)];
      return unit === 1 && x > 0 && x === y ? 1e6 / x : null;
    }
    at += 12 + length;
  }
  return null;
}

/** DICOM Part 10: the first Pixel Spacing element, explicit VR ("DS", 2-byte length) or implicit (4-byte). */
async function dicomPixelSize(file) {
  const data = await bytes(file, 0, DICOM_HEAD);
  if (data.byteLength < 132 || data.getUint32(128) !== 0x4449434d) return null; // "DICM"
  for (let at = 132; at + 12 <= data.byteLength; at += 2) {
    if (data.getUint32(at) !== 0x28003000) continue; // tag (0028,0030), little endian
    const explicit = data.getUint16(at + 4) === 0x4453; // "DS"
    const length = explicit ? data.getUint16(at + 6, true) : data.getUint32(at + 4, true);
    const start = at + 8;
    if (length > 64 || start + length > data.byteLength) continue;
    const text = new TextDecoder().decode(new Uint8Array(data.buffer, data.byteOffset + start, length));
    const [rows, cols] = text.trim().split("\\").map(Number);
    return rows > 0 && Math.abs(rows - cols) <= 1e-3 * rows ? cols * 1000 : null;
  }
  return null;
}
